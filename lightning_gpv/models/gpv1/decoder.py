"""GPV-1's text decoder: a transformer decoder over regions and query tokens, with word-vector logits.

* Inputs: the frozen BERT vector of each answer token through a trainable ``Linear`` (the reference's
  ``AnswerInputEmbedding``), optionally plus fixed sinusoidal positions.
* ``torch.nn.TransformerDecoder`` (post-norm, ReLU, causal self-attention) over a memory made of the
  co-attended regions followed by the co-attended query tokens.
* Output logit of word ``w`` = ``h . (W e_w + b)``: a dot product with a linear map of the word's frozen
  BERT vector ``e_w`` (no output bias).

Decoding (:meth:`AnswerDecoder.generate`) is greedy (``num_beams=1``) or beam search, re-running the
decoder over the whole prefix at each step (answers are at most 20 tokens). ``allowed`` restricts every
step to a set of tokens (the K-way classification evaluation).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lightning_gpv.models.gpv1.config import TextDecoderConfig
from lightning_gpv.models.gpv1.vocab import CLS_ID, PAD_ID, STOP_ID


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed ``(length, dim)`` sine/cosine position vectors (Vaswani et al.)."""
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    out = torch.zeros(length, dim, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return out


class AnswerDecoder(nn.Module):
    """Autoregressive answer decoder scoring the whole answer vocabulary at every step.

    Args:
        config: Decoder depth, heads, FFN width, dropout, positions, answer length.
        hidden: Model width (of the memory and of the decoder).
        word_dim: Width of the frozen vocabulary vectors (the text encoder's width).
    """

    def __init__(self, config: TextDecoderConfig, hidden: int, word_dim: int) -> None:
        super().__init__()
        self.max_answer_len = config.max_answer_len
        self.position_encoding = config.position_encoding
        self.input_proj = nn.Linear(word_dim, hidden)
        self.output_proj = nn.Linear(word_dim, hidden)
        layer = nn.TransformerDecoderLayer(
            hidden, config.num_heads, config.ffn_dim, config.dropout, batch_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, config.num_layers)

    def forward(
        self,
        tokens: torch.Tensor,
        word_vectors: torch.Tensor,
        memory: torch.Tensor,
        memory_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits for every prefix of ``tokens`` (teacher forcing).

        Args:
            tokens: ``(B, L)`` answer-vocabulary ids starting with ``__cls__``.
            word_vectors: ``(V, word_dim)`` frozen BERT vectors of the vocabulary.
            memory: ``(B, M, hidden)`` co-attended regions then query tokens.
            memory_padding_mask: ``(B, M)`` bool, True where memory is padding; None = attend to all.

        Returns:
            ``(B, L, V)`` logits; position ``t`` predicts token ``t + 1``.
        """
        length = tokens.shape[1]
        x = self.input_proj(word_vectors[tokens].to(memory.dtype))
        if self.position_encoding:
            x = x + sinusoidal_positions(length, x.shape[-1], x.device).to(x.dtype)
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=x.device, dtype=x.dtype)
        h = self.decoder(
            x, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=memory_padding_mask
        )
        return h @ self.output_proj(word_vectors.to(h.dtype)).T

    @torch.no_grad()
    def generate(
        self,
        word_vectors: torch.Tensor,
        memory: torch.Tensor,
        memory_padding_mask: torch.Tensor | None = None,
        *,
        max_len: int | None = None,
        num_beams: int = 1,
        allowed: torch.Tensor | None = None,
        length_penalty: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode answers, greedily or by beam search.

        Args:
            word_vectors: ``(V, word_dim)`` frozen vocabulary vectors.
            memory: ``(B, M, hidden)``.
            memory_padding_mask: ``(B, M)`` bool, True on padding.
            max_len: Longest output in tokens, ``__cls__`` included (default: ``max_answer_len``).
            num_beams: 1 = greedy.
            allowed: ``(V,)`` or ``(B, V)`` bool; only these tokens may be produced (``__stop__`` is
                always allowed). None = all but ``__pad__``, ``__cls__`` and ``__unk__``.
            length_penalty: Beam search ranks finished answers by ``log p / length ** length_penalty``.

        Returns:
            ``(tokens (B, L) int64, scores (B,) float)``: ids starting with ``__cls__``, padded with
            ``__pad__`` after ``__stop__``; scores are the answers' total log-probabilities.
        """
        max_len = max_len or self.max_answer_len
        batch, vocab = memory.shape[0], word_vectors.shape[0]
        bias = self._token_bias(allowed, batch, vocab, memory.device)
        if num_beams <= 1:
            return self._greedy(word_vectors, memory, memory_padding_mask, max_len, bias)
        return self._beam(word_vectors, memory, memory_padding_mask, max_len, bias, num_beams, length_penalty)

    @staticmethod
    def _token_bias(
        allowed: torch.Tensor | None, batch: int, vocab: int, device: torch.device
    ) -> torch.Tensor:
        if allowed is None:
            allowed = torch.ones(vocab, dtype=torch.bool, device=device)
            allowed[[PAD_ID, CLS_ID]] = False
            allowed[3] = False  # __unk__
        allowed = allowed.to(device).clone().expand(batch, vocab).clone()
        allowed[:, STOP_ID] = True
        bias = torch.zeros(batch, vocab, device=device)
        return bias.masked_fill(~allowed, float("-inf"))

    def _step(self, tokens, word_vectors, memory, mask, bias) -> torch.Tensor:
        logits = self(tokens, word_vectors, memory, mask)[:, -1].float()
        return logits.log_softmax(-1) + bias

    def _greedy(self, word_vectors, memory, mask, max_len, bias) -> tuple[torch.Tensor, torch.Tensor]:
        batch = memory.shape[0]
        tokens = torch.full((batch, 1), CLS_ID, dtype=torch.long, device=memory.device)
        scores = torch.zeros(batch, device=memory.device)
        done = torch.zeros(batch, dtype=torch.bool, device=memory.device)
        for _ in range(max_len - 1):
            logp = self._step(tokens, word_vectors, memory, mask, bias)
            best, nxt = logp.max(-1)
            nxt = nxt.masked_fill(done, PAD_ID)
            scores = scores + best.masked_fill(done, 0.0)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done = done | (nxt == STOP_ID)
            if bool(done.all()):
                break
        return tokens, scores

    def _beam(
        self, word_vectors, memory, mask, max_len, bias, beams, alpha
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, vocab = memory.shape[0], word_vectors.shape[0]
        device = memory.device
        memory = memory.repeat_interleave(beams, dim=0)
        mask = mask.repeat_interleave(beams, dim=0) if mask is not None else None
        bias = bias.repeat_interleave(beams, dim=0)
        tokens = torch.full((batch * beams, 1), CLS_ID, dtype=torch.long, device=device)
        scores = torch.full((batch, beams), float("-inf"), device=device)
        scores[:, 0] = 0.0  # all beams start identical: expand only the first
        scores = scores.reshape(-1)
        done = torch.zeros(batch * beams, dtype=torch.bool, device=device)
        lengths = torch.ones(batch * beams, device=device)
        finished_row = torch.full((vocab,), float("-inf"), device=device)
        finished_row[PAD_ID] = 0.0
        for _ in range(max_len - 1):
            logp = self._step(tokens, word_vectors, memory, mask, bias)
            logp = torch.where(done[:, None], finished_row, logp)
            total = (scores[:, None] + logp).reshape(batch, beams * vocab)
            top, index = total.topk(beams, dim=-1)
            origin = (index // vocab) + torch.arange(batch, device=device)[:, None] * beams
            origin, nxt = origin.reshape(-1), (index % vocab).reshape(-1)
            tokens = torch.cat([tokens[origin], nxt[:, None]], dim=1)
            lengths = lengths[origin] + (~done[origin]).float()
            done = done[origin] | (nxt == STOP_ID)
            scores = top.reshape(-1)
            if bool(done.all()):
                break
        normalized = (scores / lengths.clamp(min=1) ** alpha).reshape(batch, beams)
        best = normalized.argmax(-1) + torch.arange(batch, device=device) * beams
        return tokens[best], scores[best]
