#!/usr/bin/env python3
"""Write the torchvision reference outputs the augmentation tests compare against, bit for bit.

    python3 tests/data/make_augment_golden.py    # writes tests/data/augment_golden.json

torchvision's RandAugment/TrivialAugmentWide apply each op through
torchvision.transforms.autoaugment._apply_op (uint8 tensors, nearest interpolation, fill None,
i.e. 0); this calls it directly on two small random images (3x8x10, and 3x7x9 for odd sizes) for
every op at several signed magnitudes, and dumps the magnitude tables of both policies
(31 bins) for an 8x10 image. Pixels are hex strings of the uint8 [C, H, W] bytes.
"""
import json
import os

import torch
import torchvision
from torchvision.transforms import InterpolationMode
from torchvision.transforms.autoaugment import RandAugment, TrivialAugmentWide, _apply_op

OPS = {  # torchvision name -> lvit AugOp name
    "Identity": "identity", "ShearX": "shear_x", "ShearY": "shear_y",
    "TranslateX": "translate_x", "TranslateY": "translate_y", "Rotate": "rotate",
    "Brightness": "brightness", "Color": "color", "Contrast": "contrast",
    "Sharpness": "sharpness", "Posterize": "posterize", "Solarize": "solarize",
    "AutoContrast": "autocontrast", "Equalize": "equalize",
}


def hexs(t):
    return bytes(t.contiguous().view(-1).tolist()).hex()


def main():
    g = torch.Generator().manual_seed(5)
    images = []
    for (h, w) in [(8, 10), (7, 9)]:
        # A smooth-ish image with a narrow range (so autocontrast/equalize do something).
        img = (torch.rand(3, h, w, generator=g) * 150 + 40).to(torch.uint8)
        images.append(img)
    magnitudes = {
        "ShearX": [0.0, 0.09, -0.3, 0.99], "ShearY": [0.0, 0.09, -0.3, 0.99],
        "TranslateX": [0.0, 4.35, -3.0, 9.9], "TranslateY": [0.0, 2.0, -4.35, 7.0],
        "Rotate": [0.0, 9.0, -30.0, 90.0, 135.0],
        "Brightness": [0.0, 0.27, -0.9, 0.99], "Color": [0.0, 0.27, -0.9, 0.99],
        "Contrast": [0.0, 0.27, -0.9, 0.99], "Sharpness": [0.0, 0.27, -0.9, 0.99],
        "Posterize": [8.0, 7.0, 4.0, 2.0, 1.0], "Solarize": [255.0, 178.5, 100.0, 0.0],
        "AutoContrast": [0.0], "Equalize": [0.0], "Identity": [0.0],
    }
    cases = []
    for img in images:
        for name, mags in magnitudes.items():
            for m in mags:
                out = _apply_op(img.clone(), name, m, interpolation=InterpolationMode.NEAREST,
                                fill=None)
                cases.append({"op": OPS[name], "magnitude": m, "shape": list(img.shape),
                              "input": hexs(img), "output": hexs(out)})
    tables = {}
    for policy, space in [("randaugment", RandAugment()._augmentation_space(31, (8, 10))),
                          ("trivial", TrivialAugmentWide()._augmentation_space(31))]:
        tables[policy] = {OPS[k]: {"values": [float(x) for x in v.reshape(-1).tolist()],
                                   "signed": bool(s)} for k, (v, s) in space.items()}
    out = {"torchvision": torchvision.__version__, "cases": cases, "tables": tables,
           "image_hw": [8, 10]}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "augment_golden.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
