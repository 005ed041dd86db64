"""r-DAN (reasoning, VQA) and m-DAN (matching, image-text retrieval): Nam, Ha & Kim, CVPR 2017.

Both models share the two building blocks of :mod:`dan.attention` and the text encoder below:

* Text: words embedded from scratch (``embed_dim``, default ``hidden_dim``; index 0 = padding), a one-layer
  bidirectional LSTM with ``hidden_dim`` units per direction in which padding never enters either direction
  (a packed sequence on a CPU; left- and right-aligned copies on a GPU, see ``TextEncoder._lstm``), and
  ``u_t = forward h_t + backward h_t`` (summed, not concatenated); u_t = 0 on padding.
* Image: N region vectors v_n of dimension D from a frozen CNN, given as input.

r-DAN (one shared memory; both attentions read m(k-1))::

    m(0) = v(0) * u(0);   m(k) = m(k-1) + v(k) * u(k)   (k = 1..K);   logits = W_ans m(K)

m-DAN (one memory per modality; image and text encoders fully independent)::

    m_v(0) = v(0), m_v(k) = m_v(k-1) + v(k)   (visual attention reads m_v(k-1))
    m_u(0) = u(0), m_u(k) = m_u(k-1) + u(k)   (textual attention reads m_u(k-1))
    z_v = [v(0); ...; v(K)],  z_u = [u(0); ...; u(K)],  S(v, u) = sum_k v(k) . u(k) = z_v . z_u

Attention types (the ablation baselines; K = 0 reduces every type to step 0):

* ``"dual"``: both attentions as in the paper.
* ``"visual"``: visual attention only; text side u(k) = u(0) = masked mean_t u_t at every step
  (weights 1/length on valid words, 0 on padding).
* ``"textual"``: textual attention only; image side v(k) = tanh(P^(k) mean_n v_n) (weights 1/N), still
  through that step's own projection P^(k).
* ``"none"``: both sides pooled uniformly for K steps: v(k) = tanh(P^(k) mean_n v_n), u(k) = u(0).

Dropout (probability ``dropout``, paper 0.5; active only in ``train()`` mode, so ``eval()`` is
deterministic) sits on the model inputs: on the region vectors v_n [B, N, D] before any projection and
pooling, and on the word embeddings [B, T, E] before the LSTM; r-DAN also drops m(K) right before the
classifier W_ans.

Parameter count (V vocabulary, E embedding, H hidden, D region dim, C answers, Kv / Ku = K if that
side attends else 0)::

    V*E + 2*(4H*(E + H) + 8H)              embedding + BiLSTM (two biases per gate, per direction)
    + (K + 1)*(D*H + H)                    P^(0..K)
    + Kv*((D*H + H) + (H*H + H) + H)       W_v, W_vm, w_vh
    + Ku*(2*(H*H + H) + H)                 W_u, W_um, w_uh
    + (H*C + C)                            W_ans (r-DAN only)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dan.attention import TextAttention, VisualAttention, host_to_device, length_mask
from dan.config import ATTENTIONS, MODEL_FIELDS, TASKS
from dan.io import ConfigError, DataError

ATTENTION_TYPES = ATTENTIONS  # one list each, in dan.config (torch-free); TASKS is imported from there too
MODEL_OPTIONS = MODEL_FIELDS  # build_model's keyword arguments: one list, kept torch-free in dan.config
# which sides attend for each attention type: (visual, textual)
_ATTENDS = {"dual": (True, True), "visual": (True, False), "textual": (False, True), "none": (False, False)}


class RDANOutput(NamedTuple):
    logits: Tensor  # [B, C]
    visual_attention: Tensor  # [B, K, N]
    text_attention: Tensor  # [B, K, T], exactly 0 on padding
    memory: Tensor  # [B, H]  m(K)
    visual_steps: Tensor  # [B, K+1, H]  v(0..K)
    text_steps: Tensor  # [B, K+1, H]  u(0..K)


class EncodedImage(NamedTuple):
    embedding: Tensor  # [B, (K+1)*H]  z_v
    attention: Tensor  # [B, K, N]
    steps: Tensor  # [B, K+1, H]  v(0..K)


class EncodedText(NamedTuple):
    embedding: Tensor  # [B, (K+1)*H]  z_u
    attention: Tensor  # [B, K, T], exactly 0 on padding
    steps: Tensor  # [B, K+1, H]  u(0..K)


class MDANOutput(NamedTuple):
    similarity: Tensor  # [B_img, B_txt]
    image: EncodedImage
    text: EncodedText


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def check_config(vocab_size: int, visual_dim: int, hidden_dim: int, steps: int, attention: str,
                 dropout: float, embed_dim: int | None, num_answers: int | None = None) -> None:
    """Raise :class:`ConfigError` (one line: the field, its value, what is accepted) on a bad setting."""
    for name, value in (("vocab_size", vocab_size), ("visual_dim", visual_dim), ("hidden_dim", hidden_dim)):
        _positive_int(name, value)
    if embed_dim is not None:
        _positive_int("embed_dim", embed_dim)
    if num_answers is not None:
        _positive_int("num_answers", num_answers)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"steps (K) must be an integer >= 0, got {steps!r}")
    if attention not in ATTENTION_TYPES:
        raise ConfigError(f"attention must be one of {', '.join(ATTENTION_TYPES)}; got {attention!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be a number in [0, 1), got {dropout!r}")


def _stack(items: list[Tensor], like: Tensor, width: int) -> Tensor:
    """Stack K tensors [B, X] into [B, K, X]; for K = 0 an empty [B, 0, width]."""
    if items:
        return torch.stack(items, dim=1)
    return like.new_zeros((like.shape[0], 0, width))


def _regions_input(regions: Tensor, visual_dim: int, weight: Tensor) -> Tensor:
    if regions.dim() != 3 or regions.shape[-1] != visual_dim or regions.shape[1] == 0:
        raise DataError(f"regions must have shape [B, N>0, {visual_dim}], got {list(regions.shape)}")
    device_type = regions.device.type
    if torch.is_autocast_enabled(device_type):
        # Once, here: otherwise autocast casts the whole [B, N, D] tensor again for every op that reads it (the
        # fused key projection and each step's weighted sum, 1 + K copies), and dropout and the mean run in the
        # wider input type (paper sizes: 205 MB of fp32 per batch of 128).
        regions = regions.to(torch.get_autocast_dtype(device_type))
    elif regions.dtype != weight.dtype:
        regions = regions.to(weight.dtype)
    return regions


class TextEncoder(nn.Module):
    """Word embedding (padding_idx 0) + 1-layer BiLSTM over the valid words; u_t = forward h_t + backward h_t.

    ``forward(tokens [B, T] long, lengths [B]) -> (u [B, T, H] with 0 on padding, mask [B, T] bool)``.
    ``lengths`` should live on the CPU (the padding is handled from them on the host; a GPU tensor costs one sync).
    Dropout is applied to the embeddings [B, T, E]. Runs eagerly under ``torch.compile`` (the handling of padding
    and the checks on ``lengths`` are data-dependent; the cuDNN LSTM gains nothing from compiling), so a compiled
    model has one clean graph break here and compiles everything after it as one graph.
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers=1, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.aligned: bool | None = None  # the LSTM path (see _lstm); None: aligned on a GPU, packed on a CPU

    @torch.compiler.disable
    def forward(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if tokens.dim() != 2 or tokens.shape[1] == 0:
            raise DataError(f"tokens must have shape [B, T>0], got {list(tokens.shape)}")
        lengths = torch.as_tensor(lengths)
        if lengths.shape != tokens.shape[:1]:
            raise DataError(f"lengths must have shape [{tokens.shape[0]}], got {list(lengths.shape)}")
        cpu_lengths = lengths.detach().to("cpu", torch.int64)
        max_len = tokens.shape[1]
        if bool((cpu_lengths < 1).any()) or bool((cpu_lengths > max_len).any()):
            raise DataError(f"lengths must lie in [1, {max_len}] (the token width); "
                            f"got {cpu_lengths.tolist()}")
        embedded = self.dropout(self.embedding(tokens))  # [B, T, E]
        # The LSTM runs in fp32 even under autocast: cuDNN takes bf16 RNN inputs only from version 9.13 (PyTorch
        # pull request 164411), and it is a small part of the step (T ~ 14 words against N = 196 regions).
        mask = length_mask(cpu_lengths, max_len, device=tokens.device)  # [B, T]
        with torch.autocast(tokens.device.type, enabled=False):
            out = self._lstm(embedded.float(), cpu_lengths, max_len, mask=mask)  # [B, T, 2H]
        words = out[..., : self.hidden_dim] + out[..., self.hidden_dim :]  # [B, T, H]
        return words, mask

    def _lstm(self, x: Tensor, cpu_lengths: Tensor, max_len: int, aligned: bool | None = None,
              mask: Tensor | None = None) -> Tensor:
        """BiLSTM over the valid words of ``x`` [B, T, E] -> [B, T, 2H] (0 on padding; ``mask`` [B, T] is
        :func:`length_mask` of the lengths on ``x``'s device, made here when not given).

        Two ways, the same rows (a test checks values and gradients):

        * packed (the CPU's: ``aligned`` and ``self.aligned`` None on a CPU tensor, or False):
          ``pack_padded_sequence`` / ``pad_packed_sequence``.
        * aligned (the GPU's): packing sorts the batch, and unpacking runs small ops per time step, forward and
          backward, each dispatched by the host (and mostly a kernel launch). Instead the padded batch and a copy
          of it with each text moved to the right end (padding first) go through the LSTM as one batch
          [2B, T, E]: the forward direction reads the left-aligned rows, whose padding comes after the words; the
          backward direction reads the right-aligned rows from their last word, so it never meets padding before
          a word either. One fixed-shape cuDNN call and two gathers, at twice the LSTM's arithmetic: by count,
          about 45 GFLOP more per paper-size step (B 128, T 14, H 512, forward and backward), beside about
          210 GFLOP for the region keys' projection and its weight gradient, traded for ~400 fewer dispatches.
          A default-size r-DAN step dispatches 2,054 aten ops instead of 2,448 (473 instead of 516 called
          directly; CPU count with a one-op LSTM stand-in, ``benchmarks/host_ops.py``).
        """
        if aligned is None:
            aligned = x.is_cuda if self.aligned is None else self.aligned
        if not aligned:
            packed = pack_padded_sequence(x, cpu_lengths, batch_first=True, enforce_sorted=False)
            return pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=max_len)[0]
        batch, hidden = x.shape[0], self.hidden_dim
        t = torch.arange(max_len)
        shift = (max_len - cpu_lengths).unsqueeze(1)  # [B, 1] padding per text
        right = (t - shift) % max_len  # [B, T]: right-aligned position t reads left-aligned position right[b, t]
        index = host_to_device(torch.cat([right, (t + shift) % max_len]), x.device)  # [2B, T], and back
        x_right = x.gather(1, index[:batch].unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # [B, T, E]
        out = self.lstm(torch.cat([x, x_right]))[0]  # [2B, T, 2H]
        backward = out[batch:, :, hidden:].gather(1, index[batch:].unsqueeze(-1).expand(-1, -1, hidden))
        if mask is None:
            mask = length_mask(cpu_lengths, max_len, device=x.device)
        return torch.cat([out[:batch, :, :hidden], backward], dim=-1) * mask.unsqueeze(-1)  # [B, T, 2H]


class RDAN(nn.Module):
    """Reasoning Dual Attention Network for VQA (see the module docstring for the equations and dropout).

    ``forward(regions [B, N, D] float, tokens [B, T] long (0 = padding), lengths [B]) -> RDANOutput`` with
    logits [B, C] (unnormalised; softmax cross-entropy via :func:`dan.losses.vqa_loss`), visual_attention
    [B, K, N], text_attention [B, K, T] (exactly 0 on padding), memory m(K) [B, H], and v(0..K), u(0..K).
    """

    def __init__(self, vocab_size: int, num_answers: int, visual_dim: int, hidden_dim: int = 512,
                 steps: int = 2, attention: str = "dual", dropout: float = 0.5,
                 embed_dim: int | None = None) -> None:
        super().__init__()
        check_config(vocab_size, visual_dim, hidden_dim, steps, attention, dropout, embed_dim, num_answers)
        self.config = dict(vocab_size=vocab_size, num_answers=num_answers, visual_dim=visual_dim,
                           hidden_dim=hidden_dim, steps=steps, attention=attention, dropout=dropout,
                           embed_dim=embed_dim)
        self.steps, self.hidden_dim, self.visual_dim = steps, hidden_dim, visual_dim
        attend_v, attend_u = _ATTENDS[attention]
        self.text = TextEncoder(vocab_size, embed_dim or hidden_dim, hidden_dim, dropout)
        self.visual = VisualAttention(visual_dim, hidden_dim, steps, attend_v)
        self.textual = TextAttention(hidden_dim, steps, attend_u)
        self.classifier = nn.Linear(hidden_dim, num_answers)  # W_ans
        self.dropout = nn.Dropout(dropout)

    def forward(self, regions: Tensor, tokens: Tensor, lengths: Tensor) -> RDANOutput:
        words, mask = self.text(tokens, lengths)  # [B, T, H], [B, T]
        regions = _regions_input(regions, self.visual_dim, self.visual.initial.weight)
        if regions.shape[0] != tokens.shape[0]:
            raise DataError(f"regions and tokens differ in batch size: "
                            f"{regions.shape[0]} vs {tokens.shape[0]}")
        vstate, v = self.visual.begin(self.dropout(regions))
        ustate, u = self.textual.begin(words, mask)
        memory = v * u  # m(0)
        vs, us, a_vs, a_us = [v], [u], [], []
        for k in range(1, self.steps + 1):
            v, a_v = self.visual.step(k, vstate, memory)  # both read the shared m(k-1)
            u, a_u = self.textual.step(k, ustate, memory)
            memory = memory + v * u
            vs.append(v)
            us.append(u)
            a_vs.append(a_v)
            a_us.append(a_u)
        logits = self.classifier(self.dropout(memory))
        visual_attention = _stack(a_vs, regions, regions.shape[1])  # [B, K, N]
        text_attention = _stack(a_us, words, words.shape[1])  # [B, K, T]
        return RDANOutput(logits, visual_attention, text_attention, memory,
                          torch.stack(vs, dim=1), torch.stack(us, dim=1))


class MDAN(nn.Module):
    """Matching Dual Attention Network (see the module docstring for the equations and dropout).

    ``encode_image(regions [B, N, D]) -> EncodedImage`` and ``encode_text(tokens [B, T], lengths [B]) ->
    EncodedText`` are independent (no shared parameters or memory); ``similarity(z_v [Bi, (K+1)H],
    z_u [Bt, (K+1)H]) -> [Bi, Bt]``; ``forward`` does all three for paired batches.
    """

    def __init__(self, vocab_size: int, visual_dim: int, hidden_dim: int = 512, steps: int = 2,
                 attention: str = "dual", dropout: float = 0.5, embed_dim: int | None = None) -> None:
        super().__init__()
        check_config(vocab_size, visual_dim, hidden_dim, steps, attention, dropout, embed_dim)
        self.config = dict(vocab_size=vocab_size, visual_dim=visual_dim, hidden_dim=hidden_dim, steps=steps,
                           attention=attention, dropout=dropout, embed_dim=embed_dim)
        self.steps, self.hidden_dim, self.visual_dim = steps, hidden_dim, visual_dim
        attend_v, attend_u = _ATTENDS[attention]
        self.text = TextEncoder(vocab_size, embed_dim or hidden_dim, hidden_dim, dropout)
        self.visual = VisualAttention(visual_dim, hidden_dim, steps, attend_v)
        self.textual = TextAttention(hidden_dim, steps, attend_u)
        self.dropout = nn.Dropout(dropout)

    def encode_image(self, regions: Tensor) -> EncodedImage:
        """z_v = [v(0); ...; v(K)] with m_v(k) = m_v(k-1) + v(k) read by visual attention."""
        regions = _regions_input(regions, self.visual_dim, self.visual.initial.weight)
        state, v = self.visual.begin(self.dropout(regions))
        memory, vs, weights = v, [v], []
        for k in range(1, self.steps + 1):
            v, a_v = self.visual.step(k, state, memory)
            memory = memory + v
            vs.append(v)
            weights.append(a_v)
        steps = torch.stack(vs, dim=1)  # [B, K+1, H]
        return EncodedImage(steps.flatten(1), _stack(weights, regions, regions.shape[1]), steps)

    def encode_text(self, tokens: Tensor, lengths: Tensor) -> EncodedText:
        """z_u = [u(0); ...; u(K)] with m_u(k) = m_u(k-1) + u(k) read by textual attention."""
        words, mask = self.text(tokens, lengths)
        state, u = self.textual.begin(words, mask)
        memory, us, weights = u, [u], []
        for k in range(1, self.steps + 1):
            u, a_u = self.textual.step(k, state, memory)
            memory = memory + u
            us.append(u)
            weights.append(a_u)
        steps = torch.stack(us, dim=1)  # [B, K+1, H]
        return EncodedText(steps.flatten(1), _stack(weights, words, words.shape[1]), steps)

    @staticmethod
    def similarity(image_embedding: Tensor, text_embedding: Tensor) -> Tensor:
        """S [B_img, B_txt] = z_v z_u^T, i.e. S(v, u) = sum_k v(k) . u(k) (unnormalised dot product)."""
        return image_embedding @ text_embedding.transpose(0, 1)

    def forward(self, regions: Tensor, tokens: Tensor, lengths: Tensor) -> MDANOutput:
        text, image = self.encode_text(tokens, lengths), self.encode_image(regions)
        return MDANOutput(self.similarity(image.embedding, text.embedding), image, text)


def build_model(task: str, vocab_size: int, visual_dim: int, num_answers: int | None = None,
                **kwargs: Any) -> nn.Module:
    """RDAN for ``task="vqa"`` (needs ``num_answers``) or MDAN for ``task="matching"`` (ignores it).

    ``kwargs``: hidden_dim, steps, attention, dropout, embed_dim (see :class:`RDAN`).
    """
    unknown = sorted(set(kwargs) - set(MODEL_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown model option(s) {', '.join(unknown)}; "
                          f"accepted: {', '.join(MODEL_OPTIONS)}")
    if task == "vqa":
        if num_answers is None:
            raise ConfigError("task 'vqa' needs num_answers (a positive integer), got None")
        return RDAN(vocab_size, num_answers, visual_dim, **kwargs)
    if task == "matching":
        return MDAN(vocab_size, visual_dim, **kwargs)
    raise ConfigError(f"task must be one of {', '.join(TASKS)}; got {task!r}")


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters."""
    return sum(p.numel() for p in model.parameters())
