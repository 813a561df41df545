"""Face detection, alignment and cropping."""
