"""Views of what the stages made: regions drawn on photographs (`show-rois`), probe masks
highlighted in the review text (`show-probes`) and a self-contained HTML report of a training
run (`report`).

Library modules here import no click; the commands are in `commands.py`.
"""
