"""Write the bundled sample dataset in the raw MRHP release format.

The texts are written for this project; the photographs are the real ones that scikit-image
ships (`skimage.data`). Run from the repository root:

    python scripts/make_sample.py

It rewrites `mrhp_prep/data/sample/raw/` (Amazon-flavoured pandas-JSON files,
`Home_and_Kitchen.{prd,rvw,rel}.{train,dev,test}`) and `mrhp_prep/data/sample/images/`
in the crawled layout `{split}/{prd|rvw}/{item_id}/pic_{k}.jpg`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from skimage import data as photos

ROOT = Path(__file__).resolve().parents[1] / "mrhp_prep" / "data" / "sample"
PREFIX = "Home_and_Kitchen"
URL = "https://images-na.ssl-images-amazon.com/images/I/{key}._SY88.jpg"

# product id, split, photo, name, description, reviews: (votes, has image, text)
PRODUCTS = [
    ("B00SAMP001", "train", "coffee", "Porcelain Espresso Cup Set with Saucers",
     "Set of four 3 oz white porcelain espresso cups with matching saucers. Dishwasher and "
     "microwave safe, thick walls keep the coffee warm.", [
         (23, True, "I have used these espresso cups every morning for three months. The walls are "
                    "thick, so a double shot stays hot while I drink it, and the saucer catches "
                    "the drips from my machine. After about ninety dishwasher cycles the glaze "
                    "still has no crazing. One cup chipped at the rim when it fell into the sink."),
         (11, False, "The cups hold exactly one double shot with a little room for crema. The "
                     "handle is small, so people with large fingers may find it awkward. They "
                     "stack well, which matters in my tiny kitchen cabinet."),
         (6, True, "Nice weight and a clean white finish that makes the crema look great in "
                   "photos. They fit under my Breville spout with a centimetre to spare."),
         (3, False, "Good cups for the price. They arrived well packed and none was broken. "
                    "My husband likes them too."),
         (1, False, "They are cups. They hold coffee. Nothing special but nothing wrong either."),
         (0, False, "Bought these as a gift for my sister and she said they were fine, I think."),
         (2, False, "Pretty cups, but the saucers are a bit small for a spoon and a biscotti."),
     ]),
    ("B00SAMP002", "train", "chelsea", "Plush Round Cat Bed, Washable, 20 inch",
     "Donut-shaped bed with raised rim and removable cushion for cats and small dogs. "
     "Machine washable cover, non-slip base.", [
         (31, True, "Our tabby refused every bed we bought until this one. The raised rim lets her "
                    "rest her chin, and she sleeps curled inside it for hours. The cover went "
                    "through the washing machine on a gentle cycle four times and the plush did "
                    "not mat. The non-slip base really holds on our wooden floor."),
         (14, True, "Measure your cat first: the 20 inch size is the outer diameter, the sleeping "
                    "area is closer to 14 inches. Our Maine Coon hangs over the side, so we "
                    "returned it for the larger one, which he loves."),
         (5, False, "The cushion lost some loft after a month but the cat still uses the bed "
                    "daily. Shedding fur is easy to vacuum off the cover."),
         (2, False, "My cat likes it. It smelled a bit of plastic for the first two days."),
         (0, False, "Cute bed. The colour is slightly darker than in the listing photos."),
         (1, False, "Arrived quickly. The cat ignored it for a week and then moved in."),
         (8, False, "It is warm enough that my older cat with arthritis prefers it to the radiator "
                    "shelf. The rim is low enough for her to step over without jumping."),
     ]),
    ("B00SAMP003", "train", "rocket", "Model Rocket Starter Kit with Launch Pad",
     "Beginner flying model rocket kit: pre-built body, plastic fins, recovery parachute, "
     "launch pad and controller. Engines sold separately.", [
         (19, True, "Flew it eleven times with B6-4 engines in a school field. The parachute "
                    "opened on every flight and the body survived landing on hard ground. The "
                    "launch controller needs four AA batteries that are not included, and the "
                    "safety key is easy to lose, so tie it to the controller with string."),
         (9, False, "Great first kit for a ten-year-old with adult help. Assembly took twenty "
                    "minutes. Buy the engines before the weekend because local shops sell out."),
         (4, True, "The fins are glued on at the factory and one was slightly crooked, which made "
                   "the rocket spin. Still reached an impressive height."),
         (1, False, "Fun toy. My son was happy and wants another one for his birthday."),
         (0, False, "Did not try it yet because of the weather, looks well made though."),
         (3, False, "The parachute tangled on the second flight and the nose cone cracked."),
     ]),
    ("B00SAMP004", "train", "camera", "Vintage-Style 35mm Film Camera with Flash",
     "Reusable 35 mm point-and-shoot camera with a 31 mm lens, built-in flash and wrist strap. "
     "Takes one AAA battery.", [
         (27, True, "I shot six rolls with this camera. Outdoors in daylight with ISO 400 film the "
                    "pictures are sharp in the centre and soft at the edges, as expected from a "
                    "plastic lens. Indoors you need the flash, which has a range of about two "
                    "metres. The film advance wheel is stiff at first but loosens up."),
         (12, False, "Load the film in the shade: the back door has a small light leak along the "
                     "hinge and I lost the first frames of one roll. Tape over the hinge "
                     "fixes it."),
         (5, True, "It looks exactly like the photos and feels lighter than I expected. The flash "
                   "takes about eight seconds to recharge."),
         (2, False, "Nice gift for a teenager getting into photography."),
         (0, False, "Looks cool on the shelf. I have not developed the first roll yet."),
         (1, False, "The strap is flimsy, otherwise fine."),
         (7, False, "The viewfinder is not exactly where the lens points, so frame a little wider "
                    "than you think or heads get cut off in close portraits."),
     ]),
    ("B00SAMP005", "dev", "stereo_motorcycle", "Motorcycle Handlebar Phone Mount, Aluminium",
     "Aluminium phone holder for motorcycle and bicycle handlebars from 22 to 32 mm, "
     "fits phones 4.7 to 6.8 inches, 360 degree rotation.", [
         (16, True, "After 1,500 km on a single-cylinder bike the phone never slipped, even on "
                    "cobblestones. Vibration is still transmitted, and Apple warns that it can "
                    "harm the camera stabiliser, so add a damper if you have a recent iPhone."),
         (7, False, "The clamp fits my 28 mm handlebar with the rubber spacer. Tighten the ball "
                    "joint with the included hex key, by hand it loosens after an hour of riding."),
         (3, False, "Solid metal and looks premium. My large phone in a thick case barely fits."),
         (1, False, "Works as described. Delivery was one day late."),
         (0, False, "Good product, would buy again from this seller."),
         (2, True, "Mounted it on my scooter mirror stem instead of the handlebar and it is fine."),
     ]),
    ("B00SAMP006", "dev", "clock", "Silent Wall Clock, 12 inch, Non-Ticking",
     "Battery-operated quiet sweep wall clock with large numbers and glass cover, "
     "for living room, kitchen or bedroom.", [
         (13, True, "It is truly silent: in my bedroom at night I cannot hear anything from one "
                    "metre away. It gained about twenty seconds in the first month, which is "
                    "acceptable for a sweep movement. The numbers are readable from across "
                    "the room."),
         (6, False, "The glass cover reflects the window in the afternoon, so think about where "
                    "you hang it. The hook on the back is recessed and easy to hang level."),
         (2, False, "Nice simple design that suits the kitchen. Battery not included."),
         (0, False, "Clock works. Nothing more to say."),
         (1, False, "The frame is plastic, not metal as I thought, but it looks fine on the wall."),
         (4, False, "It stopped after two weeks; a fresh alkaline battery fixed it, the included "
                    "one was weak."),
     ]),
    ("B00SAMP007", "test", "coins", "Coin Collection Album for 300 Coins",
     "Leather-look binder with 10 acid-free pages of clear pockets for coins up to 30 mm, "
     "with labels and an index card.", [
         (18, True, "The pockets are acid-free PVC-free plastic, which is the most important thing "
                    "for long storage: PVC leaves green residue on copper coins. Pockets fit "
                    "coins up to about 27 mm comfortably; 30 mm coins are a tight squeeze. The "
                    "binder rings are strong and pages turn without catching."),
         (9, True, "I moved 240 euro and world coins into it over a weekend. The index card is "
                   "small; I printed my own list to put in the front pocket."),
         (3, False, "Looks nicer than the photos. Pages are thinner than in my older album."),
         (1, False, "My grandson started his collection with it and is very proud."),
         (0, False, "OK album. Came in a damaged box but the album itself was fine."),
         (5, False, "You cannot add pages of the same brand separately, which is a shame once it "
                    "is full."),
     ]),
    ("B00SAMP008", "test", "colorwheel", "Artist Color Wheel Mixing Guide, 9.25 inch",
     "Two-sided colour wheel showing primary, secondary and tertiary mixes, tints, shades, "
     "complementary and analogous schemes.", [
         (15, True, "Rotate the inner wheel to any hue and the windows show its tint, tone and "
                    "shade, plus the complementary and split complementary colours. I use it to "
                    "plan palettes for watercolour classes; students understand complements "
                    "much faster with it than with a printed chart."),
         (8, False, "The printed colours are not accurate pigment mixes, so treat it as a guide to "
                    "relations between hues rather than an exact recipe for paint."),
         (2, True, "Sturdy card stock and the wheel turns smoothly. Bigger than I expected."),
         (0, False, "Bought for my daughter's art homework, she used it once."),
         (1, False, "Handy little tool, stays on my desk next to the brushes."),
         (4, False, "The back side explains warm and cool colours in two sentences, not enough for "
                    "a beginner without a teacher."),
     ]),
]


def photo(name: str) -> Image.Image:
    array = getattr(photos, name)()
    if isinstance(array, tuple):
        array = array[0]
    image = Image.fromarray(np.asarray(array)).convert("RGB")
    image.thumbnail((320, 320))
    return image


def review_view(image: Image.Image, index: int) -> Image.Image:
    """A different view of the product photo, as a customer's own picture would be."""
    width, height = image.size
    box = [(0, 0, width * 3 // 4, height * 3 // 4), (width // 4, height // 4, width, height),
           (width // 8, 0, width * 7 // 8, height)][index % 3]
    view = image.crop(box)
    return view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if index % 2 else view


def main() -> None:
    raw, images = ROOT / "raw", ROOT / "images"
    for folder in (raw, images):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    tables = {(kind, split): [] for kind in ("prd", "rvw", "rel")
              for split in ("train", "dev", "test")}
    counter = 0
    for pid, split, photo_name, name, description, reviews in PRODUCTS:
        image = photo(photo_name)
        path = images / split / "prd" / pid / "pic_0.jpg"
        path.parent.mkdir(parents=True)
        image.save(path, quality=85)
        tables["prd", split].append({
            "product_id": pid, "name": name, "img_url": [URL.format(key=f"{pid}P0")],
            "keyword": "", "description": description, "brand_name": "Sample"})
        for index, (votes, has_image, text) in enumerate(reviews):
            rid = f"{pid}-{index}"
            urls = []
            if has_image:
                counter += 1
                urls = [URL.format(key=f"{pid}R{index}")]
                path = images / split / "rvw" / rid / "pic_0.jpg"
                path.parent.mkdir(parents=True)
                review_view(image, counter).save(path, quality=85)
            tables["rvw", split].append({
                "product_id": pid, "review_id": rid, "title": text.split(".")[0][:60],
                "content": text, "img_url": urls, "time": f"2017-0{1 + index % 9}-1{index}"})
            tables["rel", split].append({"product_id": pid, "review_id": rid, "upvotes": votes})
    for (kind, split), rows in tables.items():
        pd.DataFrame(rows).to_json(raw / f"{PREFIX}.{kind}.{split}")


if __name__ == "__main__":
    main()
