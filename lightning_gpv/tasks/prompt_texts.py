"""The text of every prompt template (data only; rendering lives in :mod:`lightning_gpv.tasks.prompts`).

GPV-1's templates are the paper's Table 7. The VistaLLM-style instructions are written anew for this
package after the examples of VistaLLM's Table E.1; box answers use ``[x0, y0, x1, y1]`` with the
top-left and bottom-right corners, masks ``N`` contour points, several objects separated by ``<bsep>`` or
``<msep>``. Mask instructions name the model's point count through :data:`POINTS_MARKER` and
:data:`LAST_POINT_MARKER`, which :meth:`~lightning_gpv.tasks.prompts.PromptBank.render` fills (``N`` and
``N - 1``; the paper writes 32 points).
"""

from __future__ import annotations

from lightning_gpv.tasks.catalogue import Task

BOX_FORMAT = "[x0, y0, x1, y1]"
POINTS_MARKER = "<npoints>"
"""Stands for the number of contour points of a mask answer in a template."""
LAST_POINT_MARKER = "<lastpoint>"
"""Stands for the index of the last contour point (``N - 1``) in a template."""
MASK_FORMAT = f"[x0, y0, x1, y1, ..., x{LAST_POINT_MARKER}, y{LAST_POINT_MARKER}]"

GPV1_TEMPLATES: dict[Task, tuple[str, ...]] = {
    Task.CAPTIONING: (
        "Generate a caption.",
        "Generate a description.",
        "Describe this image.",
        "Describe the image.",
        "Caption this image.",
        "Caption the image.",
        "What is happening in this image?",
        "What is happening in the image?",
        "What is going on in this image?",
        "What is going on in the image?",
        "Generate a caption for this image.",
        "Generate a caption for the image.",
        "Generate a description for this image.",
        "Generate a description for the image.",
    ),
    Task.CLASSIFICATION: (
        "What is this?",
        "What is this object?",
        "What object is this?",
        "What is this thing?",
    ),
    Task.LOCALIZATION: tuple(
        f"{verb} {what}[OBJECT]{where}."
        for verb in ("Locate", "Find")
        for what in ("", "instances of ", "all instances of ")
        for where in ("", " in the image", " in this image")
    ),
    Task.VQA: ("<question>",),
    Task.REC: ("<expr>",),
}

_ONE_BOX = f"Give the answer as {BOX_FORMAT}, the top-left and bottom-right corners of the box."
_ALL_BOXES = (
    f"If nothing matches, return an empty string; otherwise give each box as {BOX_FORMAT} "
    "(top-left and bottom-right corners) and separate the boxes with <bsep>."
)
_ONE_MASK = f"Give {POINTS_MARKER} points along the object's outline in {MASK_FORMAT} format."
_ALL_MASKS = (
    f"If nothing matches, return an empty string; otherwise give {POINTS_MARKER} points along each "
    f"object's outline in {MASK_FORMAT} format and separate the objects with <msep>."
)

VISTALLM_TEMPLATES: dict[Task, tuple[str, ...]] = {
    Task.CAPTIONING: (
        "Can you give me a brief description of this image <image>?",
        "Give me a short description of the picture <image>.",
        "What is happening in the image <image> at a glance?",
        "Write one sentence that summarizes the image <image>.",
        "Briefly describe what you see in <image>.",
        "Provide a concise caption for the photo <image>.",
        "Summarize the content of <image> in a single sentence.",
        "Look at <image> and tell me in a few words what it shows.",
        "Describe the scene in the image <image> briefly.",
    ),
    Task.VQA: (
        "Looking at the image <image>, can you quickly answer my question: <question>",
        "After examining the image <image>, give a brief answer to the following question: <question>",
        "Considering the image <image>, please provide a straightforward answer to: <question>",
        "Based on <image>, answer this question in a word or a short phrase: <question>",
        "Here is an image <image>. <question> Answer briefly.",
        "Use the picture <image> to answer the question <question> with a short answer.",
        "Question about the image <image>: <question> Reply with a short answer.",
        "From what you can see in <image>, what is the answer to <question>",
        "Check the image <image> and answer concisely: <question>",
    ),
    Task.LOCALIZATION: (
        f"Find every <category> in <image>. {_ALL_BOXES}",
        f"Locate all instances of <category> in the image <image>. {_ALL_BOXES}",
        f"Where are the <category> objects in <image>? {_ALL_BOXES}",
        f"Detect each <category> that appears in <image>. {_ALL_BOXES}",
        f"Mark the position of every <category> in the picture <image>. {_ALL_BOXES}",
        f"Identify all <category> instances in <image> and box them. {_ALL_BOXES}",
        f"Show me where each <category> is in the image <image>. {_ALL_BOXES}",
        f"Box every occurrence of <category> in <image>. {_ALL_BOXES}",
    ),
    Task.CLASSIFICATION: (
        "What is the object shown in <image>? Answer with its name.",
        "Name the object in the image <image>.",
        "Which kind of object does <image> show? Reply with one word or a short phrase.",
        "Identify the object in <image>.",
        "What object is this <image>?",
        "Tell me the category of the object in the picture <image>.",
        "Look at <image>. What is this thing called?",
        "Classify the main object in <image>.",
    ),
    Task.REC: (
        f"Locate the object described by <expr> in <image>. There is exactly one such object. {_ONE_BOX}",
        f"Find the location of the item referred to as <expr> within <image>. {_ONE_BOX}",
        f"Where is <expr> in the image <image>? Only one object matches. {_ONE_BOX}",
        f"Give the bounding box of <expr> in <image>. {_ONE_BOX}",
        f"In the picture <image>, which region does <expr> refer to? {_ONE_BOX}",
        f"Point out <expr> in <image> with a bounding box. {_ONE_BOX}",
        f"Detect the single object that matches <expr> in <image>. {_ONE_BOX}",
        f"Show me where <expr> is located in the image <image>. {_ONE_BOX}",
    ),
    Task.RES: (
        f"Tell me where <expr> is located in <image>. There is only one object. {_ONE_MASK}",
        f"What is the location of <expr> within <image>? One object matches. {_ONE_MASK}",
        f"Segment <expr> in the image <image>. {_ONE_MASK}",
        f"Outline the object described by <expr> in <image>. {_ONE_MASK}",
        f"Draw the contour of <expr> in the picture <image>. {_ONE_MASK}",
        f"Give me the mask of <expr> in <image>. {_ONE_MASK}",
        f"Find the single object that <expr> refers to in <image> and trace its edge. {_ONE_MASK}",
        f"Which region of <image> is <expr>? Answer with its outline. {_ONE_MASK}",
    ),
    Task.GREC: (
        f"Recognize all objects indicated by <expr> in <image>. {_ALL_BOXES}",
        f"Pinpoint every item referred to by <expr> in <image>. {_ALL_BOXES}",
        f"Find all objects matching <expr> in the image <image>. {_ALL_BOXES}",
        f"Which objects in <image> does <expr> describe? There may be none, one or several. {_ALL_BOXES}",
        f"Box everything that <expr> refers to in <image>. {_ALL_BOXES}",
        f"Locate each object described by <expr> within <image>. {_ALL_BOXES}",
        f"Detect all targets of the expression <expr> in <image>. {_ALL_BOXES}",
        f"Show the positions of all objects that fit <expr> in the picture <image>. {_ALL_BOXES}",
    ),
    Task.GRES: (
        f"Find all items indicated by <expr> within <image>. {_ALL_MASKS}",
        f"Segment every object referred to by <expr> in <image>. {_ALL_MASKS}",
        f"Recognize all objects described by <expr> in the image <image> and outline them. {_ALL_MASKS}",
        f"Which objects in <image> match <expr>? There may be none. {_ALL_MASKS}",
        f"Give the masks of all targets of <expr> in <image>. {_ALL_MASKS}",
        f"Trace the outline of each object that <expr> refers to in <image>. {_ALL_MASKS}",
        f"Outline everything in the picture <image> that fits the description <expr>. {_ALL_MASKS}",
        f"Locate and segment all objects matching <expr> within <image>. {_ALL_MASKS}",
    ),
    Task.REG: (
        "Please generate a unique description for the area <objs> displayed in the image <image>.",
        "What can you tell me about the area <objs> in the image <image> that sets it apart from the rest?",
        "How does the area <objs> in <image> stand out from the rest of the image?",
        "Describe the object in region <objs> of <image> so that it cannot be confused with any other.",
        "Write a referring expression for the region <objs> in <image>.",
        "Give a short phrase that identifies the object at <objs> in the picture <image>.",
        "In <image>, how would you refer to the object inside <objs> unambiguously?",
        "Describe the region <objs> of the image <image> in a distinctive way.",
    ),
    Task.NLVR2: (
        "Between the left image <image> and the right image <image>, is the statement <question> True or "
        "False?",
        "Reviewing both the left image <image> and the right image <image>, would you say <question> is "
        "True or False?",
        "Given the left image <image> and the right image <image>, answer True or False: <question>",
        "Left: <image> Right: <image> Is it true that <question> Respond with True or False.",
        "Look at the two images, left <image> and right <image>. Does the sentence <question> hold? "
        "Answer True or False.",
        "Here are a left image <image> and a right image <image>. True or False: <question>",
        "Decide whether <question> correctly describes the pair left <image>, right <image>. Answer True "
        "or False.",
        "Considering the left picture <image> and the right picture <image>, is <question> True or False?",
    ),
    Task.COSEG: (
        f"Find the common object in the input images <image>. There is only one common object. Give each "
        f"image's mask in {MASK_FORMAT} format and separate the masks with <msep>.",
        f"Locate the thing shared by all of the images <image>. Present each mask in {MASK_FORMAT} "
        "style and use <msep> to tell the masks apart.",
        f"Segment the object that appears in every one of these images <image>. Write one {MASK_FORMAT} "
        "mask per image, separated by <msep>.",
        f"Which object do the images <image> have in common? Outline it in each image as {MASK_FORMAT}, "
        "masks separated by <msep>.",
        f"Co-segment the images <image>: mark the common object in each with {POINTS_MARKER} outline points "
        f"{MASK_FORMAT}, using <msep> between images.",
        f"The images <image> share one object. Trace it in each image as {MASK_FORMAT} and separate the "
        "masks with <msep>.",
        f"Find what all the pictures <image> contain and segment it in each of them ({MASK_FORMAT}, "
        "<msep> between masks).",
        f"Identify the common object across <image> and give its outline in every image in {MASK_FORMAT} "
        "format, separated by <msep>.",
    ),
    Task.ATTCOSEG: (
        "Among the images <image>, find the two that share an object with matching attributes (shape, "
        f"color, size, position) and segment it in both. Show each mask in {MASK_FORMAT} style and use "
        "<msep> to tell the two masks apart.",
        "Which two of the input images <image> have a common item with the same attributes (shape, color, "
        f"size, position)? Segment it in both images in {MASK_FORMAT} format, separated by <msep>.",
        "Look at the images <image>. Exactly two of them contain an object with identical attributes. "
        f"Name the two images and outline the object in each as {MASK_FORMAT}, with <msep> between.",
        "Find the pair of images among <image> that share an object of the same shape, color, size and "
        f"position, then give its mask in both ({MASK_FORMAT}, <msep> between masks).",
        "In the images <image>, an object with matching attributes appears in two of them. Say which "
        f"two and segment the object in each using {MASK_FORMAT}, separated by <msep>.",
        "Select the two images from <image> whose objects match in shape, color, size and position, and "
        f"trace that object in both as {MASK_FORMAT}. Use <msep> between the two masks.",
        "Two of the images <image> share an object with common traits (shape, color, size, position). "
        f"Identify them and segment the object in both; write the masks as {MASK_FORMAT} joined by <msep>.",
        "Determine which images among <image> contain the same object with the same attributes, then "
        f"outline it in each of the two in {MASK_FORMAT} format with <msep> separating them.",
    ),
    Task.SPOT_CAPTIONING: (
        f"Please describe the image <image> and give the position of every object you mention as "
        f"{BOX_FORMAT}.",
        f"Present a thorough description of <image> and output each mentioned object's box as {BOX_FORMAT}.",
        f"Describe <image> in detail; after each object you name, add its bounding box {BOX_FORMAT}.",
        f"Write a caption for <image> that grounds every object in a box {BOX_FORMAT}.",
        f"Tell me what is in <image>, with a {BOX_FORMAT} box for each object in your description.",
        f"Give a grounded description of the picture <image>: every mentioned object gets {BOX_FORMAT}.",
        f"Caption <image> and localize the objects you talk about with boxes in {BOX_FORMAT} form.",
        f"Explain what the image <image> shows and mark each named object with {BOX_FORMAT}.",
    ),
    Task.POINT_QA: (
        "Looking at the point <point> in the image <image>, answer: <question>",
        "In <image>, consider the object at <point>. <question>",
        "Answer the question about the object at location <point> in <image>: <question>",
        "Focus on the point <point> of the picture <image>. <question> Answer briefly.",
        "There is an object at <point> in <image>. <question>",
        "With respect to the point <point> in <image>, <question>",
        "Check what is at <point> in the image <image> and answer: <question>",
        "Regarding the thing at <point> in <image>, please answer <question>",
    ),
    Task.BOX_QA: (
        "Looking at the region <objs> in the image <image>, answer: <question>",
        "In <image>, consider the object in <objs>. <question>",
        "Answer the question about the region <objs> of <image>: <question>",
        "Focus on the box <objs> of the picture <image>. <question> Answer briefly.",
        "There is an object inside <objs> in <image>. <question>",
        "With respect to the region <objs> in <image>, <question>",
        "Check what is inside <objs> in the image <image> and answer: <question>",
        "Regarding the object in the area <objs> of <image>, please answer <question>",
    ),
}
