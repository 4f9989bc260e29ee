"""Training stage: what pretrained weights from elsewhere expect beyond their tensors.

A state dict carries tensors only. Some torchvision models also change their input before
the first layer when used with their published weights; a bundled spec written after such a
model does not have that step, so loading the weights gets a note saying what replaces it.
"""
from __future__ import annotations

# network name (a bundled spec) -> the note for a plain state dict loaded into it
PREPROCESSING_NOTES = {
    # torchvision's GoogLeNet with its pretrained weights sets transform_input=True, mapping
    # ImageNet-normalized channels c to x_c * std_c / 0.5 + (mean_c - 0.5) / 0.5, that is
    # (pixel - 0.5) / 0.5: the same input as normalize = [0.5, 0.5] gives.
    "googlenet": (
        "torchvision's pretrained GoogLeNet weights expect transform_input=True, which "
        "turns ImageNet-normalized input into (x - 0.5) / 0.5 per channel; the spec has no "
        "such step, so train and predict with normalize = [0.5, 0.5] (CLI --normalize "
        "'[0.5, 0.5]') instead of imagenet"),
}


def preprocessing_note(network: str) -> str | None:
    """The note for loading a plain state dict into `network`, if its source expects an
    input step the spec lacks."""
    return PREPROCESSING_NOTES.get(network)
