"""Write conf/backbone/<model>.yaml for every torchvision classifier with featx.propose, plus <model>_fpn.yaml for
one model of each family and every ViT, and timm_<name>.yaml (+ _fpn) for a few timm models; the notes below are the
human review of what each family's own forward does beyond running the stages.

    python scripts/make_zoo_configs.py            # writes the missing files
    python scripts/make_zoo_configs.py --force    # rewrites the generated ones (never the reference extractors)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import featx
from featx.construct.proposal_yaml import proposal_yaml
from featx.construct.propose import analyse
from featx.models.registry import classification_models

CONF = Path(__file__).resolve().parents[1] / "conf" / "backbone"
#: the three reference extractors: written by hand, never regenerated
REFERENCE_FILES = {"vgg16", "resnet34", "resnet50_fpn"}
FPN_WIDTH = 256
#: one model per family gets a _fpn variant
FPN_MODELS = [
    "resnet18",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "convnext_tiny",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "densenet121",
    "mnasnet1_0",
    "shufflenet_v2_x1_0",
    "googlenet",
    "inception_v3",
    "swin_t",
    "swin_v2_t",
    "maxvit_t",
    "vgg16_bn",
    "alexnet",
    "squeezenet1_1",
    "vit_b_16",
    "vit_b_32",
    "vit_l_16",
    "vit_l_32",
    "vit_h_14",
]
#: packaged timm examples: file name -> timm model (each also gets a _fpn variant)
TIMM_FILES = {
    "timm_convnext_tiny": "convnext_tiny",
    "timm_efficientnet_b0": "efficientnet_b0",
    "timm_regnety_008": "regnety_008",
    "timm_resnet50d": "resnet50d",
    "timm_swin_tiny": "swin_tiny_patch4_window7_224",
}
TIMM_NORM_ACT = (
    "timm's BatchNormAct2d layers are a BatchNorm followed by an activation: under norm: frozen featx keeps them "
    "(their statistics and affine fixed, always in eval mode) instead of turning them into FrozenBatchNorm2d, which "
    "would drop the activation."
)
TIMM_NOTES = {
    "timm_convnext_tiny": ["c5 ends on norm_pre (an Identity in this model); the head pools and normalises."],
    "timm_efficientnet_b0": [
        "c5 ends on conv_head and bn2, the 1x1 conv that widens the features for the classifier.",
        TIMM_NORM_ACT,
    ],
    "timm_regnety_008": ["c5 ends on final_conv (an Identity in this model).", TIMM_NORM_ACT],
    "timm_resnet50d": ["c2 is the deep stem (three convs) plus layer1; the forward adds nothing."],
    "timm_swin_tiny": [
        "The blocks work channels-last (layout: nhwc); featx returns every output as N x C x H x W. c5 includes "
        "the final LayerNorm norm. input_size [224, 224]: timm's patch embedding checks the input size."
    ],
}
TRANSFORM_INPUT = (
    "The model's own forward first applies transform_input when torchvision builds it with pretrained weights: it "
    "turns ImageNet-normalised images into (x - 0.5) / 0.5, the normalisation those weights were trained with. The "
    "stages do not, so with pretrained weights feed images normalised with mean = std = 0.5."
)
#: family prefix -> what the classifier's forward does beyond running these stages in order
NOTES = {
    "alexnet": ["c5 is the last max-pool alone (the only layer at stride 32)."],
    "vgg": [
        "c5 is the last max-pool alone (the only layer at stride 32); vgg16.yaml shows the block-output style "
        "(stages end on the ReLU before each pool)."
    ],
    "resnet": ["c2 is the stem plus layer1, as in torchvision's detection backbones; the forward adds nothing."],
    "resnext": ["c2 is the stem plus layer1, as in torchvision's detection backbones; the forward adds nothing."],
    "wide_resnet": ["c2 is the stem plus layer1, as in torchvision's detection backbones; the forward adds nothing."],
    "densenet": [
        "c5 ends on features.norm5, a BatchNorm: the model's own forward applies a ReLU to it before "
        "pooling, which is not part of c5."
    ],
    "mobilenet": [
        "c5 ends on the last 1x1 conv that widens the features for the classifier; the forward adds "
        "nothing else before pooling."
    ],
    "efficientnet": [
        "c5 ends on the last 1x1 conv that widens the features for the classifier; the forward adds "
        "nothing else before pooling. Stochastic depth in the blocks is active in train mode only."
    ],
    "mnasnet": ["c5 ends on the last 1x1 conv (1280 channels); the forward then takes the spatial mean."],
    "shufflenet": ["c5 ends on conv5 (1x1 conv to the classifier width); the forward then takes the spatial mean."],
    "squeezenet": [
        "No stride-32 stage: the last max-pool is at stride 16. The classifier (dropout, 1x1 conv to the "
        "classes, ReLU, global pool) is left out."
    ],
    "regnet": [
        "c2 is the stem plus trunk_output.block1; the forward adds nothing. RegNet's constructor computes "
        "widths with tensor ops, so featx plans it by registering its parameters on the meta device."
    ],
    "convnext": [
        "Each stage from c3 starts with its downsampling layer (LayerNorm2d + stride-2 conv); the forward "
        "adds nothing. Stochastic depth is active in train mode only."
    ],
    "googlenet": [TRANSFORM_INPUT, "aux1 and aux2 (auxiliary classifiers, training only) are not part of the stages."],
    "inception": [TRANSFORM_INPUT, "Inputs must be at least 75x75 (unpadded convolutions)."],
    "swin": [
        "The blocks work channels-last (layout: nhwc); featx returns every output as N x C x H x W. c5 includes "
        "the final LayerNorm `norm` that the classifier applies."
    ],
    "vit": [
        "A token model: featx flattens conv_proj's patch map into tokens, puts class_token in front and adds "
        "encoder.pos_embedding (what VisionTransformer.forward and Encoder.forward do beyond calling modules), "
        "resampling the position embedding bicubically for inputs other than the model's own size; input sides must "
        "be multiples of the stride. Every stage returns the patch tokens as a map (the class token dropped); "
        "blocks4 ends on the final LayerNorm encoder.ln. The _fpn variant is ViTDet's simple feature pyramid on "
        "blocks4; where the patch size is not a power of two, tokens.stride resizes the image so that a patch covers "
        "a power-of-two number of pixels. The SWAG_E2E weights were trained at larger sizes and carry a longer "
        "position embedding than this model (built at 224x224) takes.",
    ],
    "maxvit": [
        "input_size [224, 224]: MaxViT sizes its window and grid partitions at construction for 224x224 "
        "inputs and takes no other size."
    ],
}


def _notes(model: str) -> list:
    prefix = max((key for key in NOTES if model.startswith(key)), key=len, default=None)
    return NOTES[prefix] if prefix else []


def _write(name: str, text: str, force: bool) -> str:
    path = CONF / f"{name}.yaml"
    if name in REFERENCE_FILES or (path.exists() and not force):
        return "kept"
    path.write_text(text)
    return "written"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rewrite generated files that exist")
    args = parser.parse_args()
    for model in classification_models():
        try:
            proposal = analyse(model)
        except featx.ArgumentError as error:
            print(f"{model}: skipped: {error}")
            continue
        command = f"featx-propose {model}"
        print(f"{model}: {_write(model, proposal_yaml(proposal, command, _notes(model)), args.force)}")
        if model in FPN_MODELS:
            fpn = analyse(model, fpn=FPN_WIDTH)
            text = proposal_yaml(fpn, f"{command} --fpn {FPN_WIDTH}", _notes(model))
            print(f"{model}_fpn: {_write(model + '_fpn', text, args.force)}")
    for name, timm_model in TIMM_FILES.items():
        model = f"timm:{timm_model}"
        notes = TIMM_NOTES[name]
        text = proposal_yaml(analyse(model), f"featx-propose {model}", notes)
        print(f"{name}: {_write(name, text, args.force)}")
        text = proposal_yaml(analyse(model, fpn=FPN_WIDTH), f"featx-propose {model} --fpn {FPN_WIDTH}", notes)
        print(f"{name}_fpn: {_write(name + '_fpn', text, args.force)}")


if __name__ == "__main__":
    main()
