"""Raw MRHP release reading, the manifest, the image fetcher and the bundled sample."""
