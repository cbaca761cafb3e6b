"""Parameter shapes of standard architectures, generated from the architecture (no download)."""

from __future__ import annotations

Shapes = list[tuple[str, tuple[int, ...]]]


def resnet50() -> Shapes:
    """torchvision's ResNet-50: 161 tensors, 25,557,032 parameters."""
    shapes: Shapes = [("conv1.weight", (64, 3, 7, 7)), ("bn1.weight", (64,)), ("bn1.bias", (64,))]
    inplanes = 64
    for layer, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True), 1):
        for block in range(blocks):
            prefix = f"layer{layer}.{block}"
            for i, (out, inp, k) in enumerate(((planes, inplanes, 1), (planes, planes, 3),
                                               (planes * 4, planes, 1)), 1):
                shapes += [(f"{prefix}.conv{i}.weight", (out, inp, k, k)),
                           (f"{prefix}.bn{i}.weight", (out,)), (f"{prefix}.bn{i}.bias", (out,))]
            if block == 0:
                shapes += [(f"{prefix}.downsample.0.weight", (planes * 4, inplanes, 1, 1)),
                           (f"{prefix}.downsample.1.weight", (planes * 4,)),
                           (f"{prefix}.downsample.1.bias", (planes * 4,))]
            inplanes = planes * 4
    return [*shapes, ("fc.weight", (1000, 2048)), ("fc.bias", (1000,))]


def count(shapes: Shapes) -> int:
    total = 0
    for _, shape in shapes:
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


if __name__ == "__main__":
    s = resnet50()
    print(len(s), count(s))
