"""The fusion heads of the MLB code (its ``cls_type``): late ``sum`` / ``concat``, mid ``mlp``, ``film``,
``gated`` and ``transformer``; the modules that see modality m alone are ``parts[m]`` (scaled with m by
OGM / MLB), the rest (output layers, shared biases, the transformer) is shared."""
import torch
from torch import nn

from mmbal.models.base import FUSIONS, Fusion


def _pick_pair(fusion: str, modalities: tuple[str, ...], first: str | None, role: str) -> tuple[str, str]:
    """(first, second) of a two-modality fusion; ``first`` defaults to audio (the paper's choice)."""
    first = ("audio" if "audio" in modalities else modalities[0]) if first is None else first
    if first not in modalities:
        raise ValueError(f"{fusion}: {role} must be one of {list(modalities)}, got {first!r}")
    return first, next(m for m in modalities if m != first)


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """Late linear fusion over the concatenated features (the paper's "Late-Linear").
    logits = W [z_1; ...; z_M] + b = sum_m W_m z_m + b: one bias-free Linear per modality (``parts[m]``) and a
    shared bias, so MLB scales each block W_m with its modality but not the bias (as the MLB code does)."""
    late_linear = True
    shared_bias = True

    def __init__(self, modalities, dims, num_classes):
        super().__init__(modalities, dims, num_classes)
        for m in self.modalities:
            self.parts[m] = nn.Linear(dims[m], num_classes, bias=not self.shared_bias)
        if self.shared_bias:
            self.bias = nn.Parameter(torch.zeros(num_classes))

    def fuse(self, features, tokens=None):
        logits = sum(self.parts[m](features[m]) for m in self.modalities)           # (B, C)
        return logits + self.bias if self.shared_bias else logits

    def unimodal_logits(self, features, tokens=None):
        """Each modality's exact share (OGM's split): W_m z_m (+ b_m), plus b / M of a shared bias."""
        split = {m: self.parts[m](features[m]) for m in self.modalities}           # (B, C) each
        return {m: v + self.bias / len(split) for m, v in split.items()} if self.shared_bias else split


@FUSIONS.register("sum")
class SumFusion(ConcatFusion):
    """Late sum of per-modality linear classifiers (each with its own bias).
    logits = sum_m (W_m z_m + b_m): each modality owns its whole classifier, bias included."""
    shared_bias = False


@FUSIONS.register("mlp")
class MLPFusion(Fusion):
    """Mid fusion: summed per-modality projections, then a ReLU/Dropout MLP (the paper's "Mid-MLP").
    h = sum_m W_m z_m + b -> ReLU -> Dropout -> Linear(h, h) -> ReLU -> Dropout -> Linear(h, C) (the MLB code's ``nonlinear``)."""

    def __init__(self, modalities, dims, num_classes, *, hidden: int = 64, dropout: float = 0.1):
        super().__init__(modalities, dims, num_classes)
        for m in self.modalities:
            self.parts[m] = nn.Linear(dims[m], hidden, bias=False)
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.mlp = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def fuse(self, features, tokens=None):
        return self.mlp(sum(self.parts[m](features[m]) for m in self.modalities) + self.bias)  # (B, hidden) -> (B, C)


@FUSIONS.register("film")
class FiLMFusion(Fusion):
    """FiLM: audio features scale and shift the video features (exactly two modalities).
    [gamma, beta] = G z_c (``parts[c]``), logits = W (gamma z_t + beta) + b (Perez et al. 2018; the MLB code's ``film``); with
    ``residual=True`` the scale is 1 + gamma and G starts at zero (identity modulation)."""
    min_modalities = max_modalities = 2

    def __init__(self, modalities, dims, num_classes, *, conditioner: str | None = None, residual: bool = False):
        super().__init__(modalities, dims, num_classes)
        self.conditioner, self.target = _pick_pair("film", self.modalities, conditioner, "conditioner")
        self.residual = residual
        self.parts[self.conditioner] = nn.Linear(dims[self.conditioner], 2 * dims[self.target])
        if residual:
            nn.init.zeros_(self.parts[self.conditioner].weight)
            nn.init.zeros_(self.parts[self.conditioner].bias)
        self.classifier = nn.Linear(dims[self.target], num_classes)

    def fuse(self, features, tokens=None):
        gamma, beta = self.parts[self.conditioner](features[self.conditioner]).chunk(2, dim=-1)  # 2 x (B, D_t)
        gamma = 1.0 + gamma if self.residual else gamma
        return self.classifier(gamma * features[self.target] + beta)            # (B, D_t) -> (B, C)


@FUSIONS.register("gated")
class GatedFusion(Fusion):
    """Gated: sigmoid(audio projection) gates the video projection (exactly two modalities).
    logits = W (sigmoid(A z_g) * (V z_v)) + b, ``parts[g] = A``, ``parts[v] = V`` (Kiela et al. 2018; the MLB code's ``gated``)."""
    min_modalities = max_modalities = 2

    def __init__(self, modalities, dims, num_classes, *, gate: str | None = None, hidden: int | None = None):
        super().__init__(modalities, dims, num_classes)
        self.gate, self.value = _pick_pair("gated", self.modalities, gate, "gate")
        hidden = hidden or dims[self.value]
        self.parts[self.gate] = nn.Linear(dims[self.gate], hidden)
        self.parts[self.value] = nn.Linear(dims[self.value], hidden)
        self.classifier = nn.Linear(hidden, num_classes)

    def fuse(self, features, tokens=None):
        gates = torch.sigmoid(self.parts[self.gate](features[self.gate]))                  # (B, hidden), in (0, 1)
        return self.classifier(gates * self.parts[self.value](features[self.value]))      # (B, hidden) -> (B, C)


class TokenProjection(nn.Module):
    """One modality's entry to the transformer: Linear(D_m -> d) plus a learned modality embedding."""

    def __init__(self, dim: int, d_model: int):
        super().__init__()
        self.proj = nn.Linear(dim, d_model)
        self.embedding = nn.Parameter(torch.randn(d_model) * 0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens) + self.embedding                # (B, L, D_m) -> (B, L, d)


@FUSIONS.register("transformer")
class TransformerFusion(Fusion):
    """Token fusion: CLS + projected tokens of every modality through a small transformer encoder.
    [CLS; P_1 t_1 + e_1; ...] -> 2 pre-norm layers -> logits = W LayerNorm(h_CLS) + b (the MLB code's ``tf``, whose
    Conformer is replaced: no convolution over tokens whose order mixes space and time); ``parts[m]`` = P_m, e_m."""
    uses_tokens = True

    def __init__(self, modalities, dims, num_classes, *, d_model: int = 512, num_layers: int = 2,
                 num_heads: int = 8, ffn_dim: int | None = None, dropout: float = 0.1):
        super().__init__(modalities, dims, num_classes)
        if d_model % num_heads:
            raise ValueError(f"transformer: d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        for m in self.modalities:
            self.parts[m] = TokenProjection(dims[m], d_model)
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, ffn_dim or 4 * d_model, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.classifier = nn.Linear(d_model, num_classes)

    def fuse(self, features, tokens=None, modalities=None):
        """CLS attending to the tokens of ``modalities`` (all by default; modality m alone: m's prediction)."""
        if tokens is None:
            raise ValueError("transformer fusion needs the token sequences (B, L_m, D_m) of every modality")
        modalities = modalities or self.modalities
        seq = [self.cls.expand(tokens[modalities[0]].shape[0], -1, -1)]         # (B, 1, d)
        seq += [self.parts[m](tokens[m]) for m in modalities]                   # (B, L_m, d) each
        h = self.encoder(torch.cat(seq, dim=1))                                 # (B, 1 + sum L_m, d)
        return self.classifier(self.norm(h[:, 0]))                              # (B, d) -> (B, C)

    def unimodal_logits(self, features, tokens=None):
        return {m: self.fuse(features, tokens, (m,)) for m in self.modalities}
