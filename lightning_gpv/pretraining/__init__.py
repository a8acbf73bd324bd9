"""Pretraining of the tiny image encoders on ShapesWorld (``lightning-gpv pretrain-encoder``).

Both papers start from a pretrained, frozen image encoder (VistaLLM: EVA-CLIP; GPV-1: a COCO-trained DETR).
The tiny presets get theirs from here: :mod:`.targets` renders a seeded ShapesWorld pool with dense
per-patch targets, :mod:`.encoder` trains the tiny EVA trunk on them, and :mod:`.shipped` finds, checks and
loads the weight files that ship with the package (``lightning_gpv/pretrained/``).
"""
