"""The spec lists the backend tests share (tests/test_torchgen.py, tests/test_onnx.py)."""
import os

from netspec.specfiles import library_specs

HERE = os.path.dirname(__file__)
BUNDLED = sorted(library_specs())
TEST_SPECS = sorted(os.path.join(HERE, "specs", f) for f in os.listdir(os.path.join(HERE, "specs"))
                    if f.endswith(".net") and f != "bad_residual.net")

# Cheap inputs where the spec allows a smaller image than its own (global or adaptive pooling
# before the classifier); batch 2 everywhere (batch norm trains on 2 values per channel).
SMALL_INPUT = {"alexnet": (3, 64, 64), "googlenet": (3, 32, 32),
               "alexnet_v2_slim": (3, 96, 96), "mobilenet_v2": (3, 32, 32)}
SMALL_INPUT |= {n: (3, 32, 32) for n in BUNDLED if n.startswith(("resnet", "vgg"))}


def spec_id(spec: str) -> str:
    """"resnet18" or "tiny_vgg_bn" for a bundled name or a test spec's path."""
    return os.path.basename(spec).removesuffix(".net")
