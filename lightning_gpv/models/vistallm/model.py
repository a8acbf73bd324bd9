"""VistaLLM (Pramanick et al., 2024): EVA image encoder, instruction-guided QFormer tokenizer, causal LLM.

Sequences reach the model with every ``<image>`` of the instruction already expanded to ``L`` copies of
the ``<image>`` token id (the processor does it). The model encodes the ``N`` images of the batch, runs the
QFormer per image with its sample's instruction, and scatters the ``N x L`` projected query outputs into
those positions in order (sample by sample, image by image), so a sample with k images gets ``k x L``
visual tokens.

Stages (:meth:`VistaLLM.set_stage`): stage 1 trains everything but the image encoder (with LoRA: the
tokenizer, the adapters and the added tokens' rows); stage 2 trains only the instruction-guided
tokenizer (LayerNorm on the image tokens, QFormer, queries, projection).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from lightning_gpv.models import shipped
from lightning_gpv.models.hub import WEIGHTS_FILE, SavedFolderMixin, shareable, write_folder_config
from lightning_gpv.models.vistallm import folder
from lightning_gpv.models.vistallm.config import VistaLLMConfig
from lightning_gpv.models.vistallm.constraints import AnswerFormat, CoordinateGrammar, GrammarState
from lightning_gpv.models.vistallm.llm import (
    apply_lora,
    build_llama,
    is_adapter_weight,
    load_causal_lm,
    resize_with_mean,
)
from lightning_gpv.models.vistallm.losses import IGNORE_INDEX, answer_loss
from lightning_gpv.models.vistallm.qformer import InstructionGuidedTokenizer
from lightning_gpv.models.vistallm.tokenization import added_tokens, load_llm_tokenizer
from lightning_gpv.models.vistallm.vision import VisionEncoder, build_vision_encoder
from lightning_gpv.tasks.catalogue import IMAGE_TOKEN

STAGES = (1, 2)


class VistaLLM(
    nn.Module, SavedFolderMixin, library_name="lightning-gpv", tags=["vistallm", "vision-language"]
):
    """Image encoder + instruction-guided image tokenizer + LLM.

    Args:
        vision: Image encoder returning ``(N, P, D_v)`` tokens (EVA, CLIP or SigLIP; see
            :func:`~lightning_gpv.models.vistallm.vision.build_vision_encoder`).
        tokenizer: Instruction-guided tokenizer returning ``(N, L, D)`` visual tokens.
        llm: Causal LM (optionally a peft LoRA wrapper) with the added tokens already in its vocabulary.
        image_token_id: Id of ``<image>``; each image occupies ``L`` consecutive positions with this id.
        coord_token_ids: Ids of the coordinate tokens in bin order; needed when ``coord_label_sigma > 0``.
        coord_label_sigma: Std, in bins, of the Gaussian soft targets of coordinate answer tokens in the
            loss (:func:`~lightning_gpv.models.vistallm.losses.answer_loss`); 0 is the paper's cross-entropy.
    """

    def __init__(
        self,
        vision: VisionEncoder,
        tokenizer: InstructionGuidedTokenizer,
        llm: PreTrainedModel,
        *,
        image_token_id: int,
        coord_token_ids: list[int] | None = None,
        coord_label_sigma: float = 0.0,
    ) -> None:
        super().__init__()
        if coord_label_sigma < 0:
            raise ValueError(f"coord_label_sigma must be >= 0, got {coord_label_sigma}")
        if coord_label_sigma > 0 and not coord_token_ids:
            raise ValueError("coord_label_sigma > 0 needs coord_token_ids")
        self.vision = vision
        self.tokenizer = tokenizer
        self.llm = llm
        self.image_token_id = image_token_id
        self.num_queries = tokenizer.num_queries
        self.coord_label_sigma = coord_label_sigma
        self.coord_token_ids = tuple(coord_token_ids or ())
        self.config: VistaLLMConfig | None = None
        """The config the model was built from (:meth:`from_config`); ``save_pretrained`` needs it."""

    # ------------------------------------------------------------------------------------------------
    # Construction

    @classmethod
    def from_config(
        cls,
        config: VistaLLMConfig,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        load_weights: bool = True,
        dtype: torch.dtype = torch.float32,
        llm: PreTrainedModel | None = None,
    ) -> VistaLLM:
        """Build VistaLLM from its config.

        Args:
            config: The config.
            tokenizer: The LLM tokenizer with the added tokens (``load_llm_tokenizer``); without one the
                added tokens are assumed appended after ``config.llm.vocab_size`` (parameter counting).
            load_weights: Load the pretrained weights the config names (open_clip EVA or the CLIP/SigLIP
                tower, InstructBLIP QFormer, the LLM); ``False`` builds everything from the config's
                dimensions (no download, works under ``torch.device("meta")``).
            dtype: Dtype of the loaded LLM weights.
            llm: A causal LM to use as it is, its vocabulary already holding the added tokens (a saved
                model folder rebuilds its LLM from the saved architecture and loads every weight after);
                ``config.llm`` then only adds LoRA and gradient checkpointing.
        """
        v, q, lc = config.vision, config.qformer, config.llm
        vision = build_vision_encoder(v, load_weights=load_weights)

        prebuilt = llm is not None
        if llm is None and load_weights and lc.name_or_path:
            llm = load_causal_lm(lc.name_or_path, gguf_file=lc.gguf_file, dtype=dtype)
        elif llm is None:
            llm = build_llama(
                vocab_size=lc.vocab_size,
                hidden_size=lc.hidden_size,
                intermediate_size=lc.intermediate_size,
                num_layers=lc.num_layers,
                num_heads=lc.num_heads,
                num_kv_heads=lc.num_kv_heads,
                max_position_embeddings=lc.max_position_embeddings,
                rms_norm_eps=lc.rms_norm_eps,
                rope_theta=lc.rope_theta,
                tie_word_embeddings=lc.tie_word_embeddings,
                initializer_range=lc.initializer_range,
            )
        embeddings = llm.get_input_embeddings().weight
        base_size, llm_width = embeddings.shape
        names = added_tokens(config.codec)
        if tokenizer is None:
            new_ids = list(range(base_size, base_size + len(names)))
            new_size = base_size + len(names)
        else:
            new_ids = tokenizer.convert_tokens_to_ids(names)
            if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in new_ids:
                raise ValueError("the tokenizer lacks the added tokens; build it with load_llm_tokenizer")
            new_size = max(base_size, len(tokenizer))
        if not prebuilt:
            resize_with_mean(llm, new_size, new_ids)

        image_tokenizer = InstructionGuidedTokenizer(
            vision_width=vision.width,
            llm_width=llm_width,
            num_queries=q.num_queries,
            hidden_size=q.hidden_size,
            num_layers=q.num_layers,
            num_heads=q.num_heads,
            intermediate_size=q.intermediate_size,
            vocab_size=q.vocab_size,
            max_position_embeddings=q.max_position_embeddings,
            cross_attention_frequency=q.cross_attention_frequency,
            initializer_range=q.initializer_range,
        )
        if load_weights and q.checkpoint and q.checkpoint.endswith(".safetensors"):
            shipped.load_encoder(image_tokenizer, q.checkpoint)
        elif load_weights and q.checkpoint:
            image_tokenizer.load_instructblip(q.checkpoint)
        if lc.lora is not None:
            llm = apply_lora(llm, lc.lora, new_ids)
        model = cls(
            vision,
            image_tokenizer,
            llm,
            image_token_id=new_ids[names.index(IMAGE_TOKEN)],
            coord_token_ids=new_ids[: config.num_bins],  # added_tokens starts with the bins in order
            coord_label_sigma=config.coord_label_sigma,
        )
        if lc.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        model.config = config
        return model

    # ------------------------------------------------------------------------------------------------
    # Saved folders (huggingface_hub's ModelHubMixin: save_pretrained, from_pretrained, push_to_hub)

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write the config, the LLM's architecture and every weight (``lightning_gpv.models.vistallm.folder``
        lists the files); the processor writes the tokenizers (``VistaLLMProcessor.save_pretrained``)."""
        if self.config is None:
            raise ValueError("save_pretrained needs the model's config: build it with VistaLLM.from_config")
        folder.write_config(save_directory, self.config, self.llm)
        # save_model stores tied weights (tied input and output embeddings) once.
        save_model(self, str(save_directory / WEIGHTS_FILE))
        shareable(save_directory / WEIGHTS_FILE)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights an adapter folder holds: those no base model provides (``folder.from_base``)."""
        if self.config is None:
            raise ValueError("an adapter needs the model's config: build it with VistaLLM.from_config")
        return {k: v for k, v in self.state_dict().items() if not folder.from_base(k, self.config)}

    def save_adapter(self, save_directory: str | Path) -> Path:
        """Write an adapter folder (``lightning_gpv.models.vistallm.folder``): the config with the base
        models' names and :meth:`adapter_state_dict`; ``from_pretrained`` rebuilds the base models and
        loads it. The processor writes the tokenizers (``VistaLLMProcessor.save_pretrained``).

        Raises:
            ValueError: The LLM has no LoRA adapters (save the whole model with ``save_pretrained``).
        """
        if not self.has_lora:
            raise ValueError("save_adapter: the LLM has no LoRA adapters; use save_pretrained")
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        write_folder_config(path, folder.FAMILY, folder.adapter_config(self.config).to_dict())
        # Tied tensors share storage, which safetensors refuses; the adapter's tensors are small copies.
        weights = {k: v.detach().contiguous().clone() for k, v in self.adapter_state_dict().items()}
        save_file(weights, str(path / folder.ADAPTER_FILE), metadata={"format": "pt"})
        shareable(path / folder.ADAPTER_FILE)
        return path

    @classmethod
    def _load_folder(cls, path: Path) -> VistaLLM:
        """Rebuild the saved architecture with random weights, then load every saved weight (strictly).

        Needs none of the base models (EVA, InstructBLIP, the LLM's original files or its GGUF package):
        the folder holds the weights, the LLM's architecture and the tokenizers. An adapter folder instead
        builds the base models its config names, then loads the adapter over them.
        """
        if (path / folder.ADAPTER_FILE).is_file():
            return cls._load_adapter_folder(path)
        config = folder.read_config(path)
        tokenizer = load_llm_tokenizer(config.llm, config.codec)
        model = cls.from_config(
            config, tokenizer=tokenizer, load_weights=False, llm=folder.build_saved_llm(path)
        )
        load_model(model, str(path / WEIGHTS_FILE), strict=True)
        return model

    @classmethod
    def _load_adapter_folder(cls, path: Path) -> VistaLLM:
        """The base models of the saved config (loaded from their names), the adapter's weights over them;
        every weight the base models do not provide must be in the adapter."""
        config = folder.read_config(path)
        tokenizer = load_llm_tokenizer(config.llm, config.codec)
        model = cls.from_config(config, tokenizer=tokenizer, load_weights=True)
        weights = load_file(str(path / folder.ADAPTER_FILE))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if not folder.from_base(k, config)]
        if missing or unexpected:
            raise ValueError(
                f"{path / folder.ADAPTER_FILE} does not fit the model of its config: "
                f"missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})"
            )
        return model

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations of the LLM, the QFormer and the image encoder in the backward pass."""
        kwargs = {"use_reentrant": False}
        self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        self.tokenizer.qformer.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        self.vision.set_grad_checkpointing(True)

    # ------------------------------------------------------------------------------------------------
    # Trainable parameters

    @property
    def has_lora(self) -> bool:
        """Whether the LLM is wrapped in peft adapters."""
        return hasattr(self.llm, "peft_config")

    def set_stage(self, stage: int) -> None:
        """Set ``requires_grad`` for a training stage (the paper's §5.2).

        Stage 1: the image encoder is frozen; the tokenizer and the LLM train (with LoRA only peft's
        weights: the adapters, the added tokens' rows, any ``modules_to_save`` copies). Stage 2: only the
        tokenizer trains.
        """
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage}")
        self.vision.requires_grad_(False)
        self.tokenizer.requires_grad_(True)
        for name, param in self.llm.named_parameters():
            param.requires_grad_(stage == 1 and (is_adapter_weight(name) or not self.has_lora))
        self.train(self.training)

    def train(self, mode: bool = True) -> VistaLLM:
        """Like ``nn.Module.train``, but a frozen image encoder always stays in eval mode."""
        super().train(mode)
        if not any(p.requires_grad for p in self.vision.parameters()):
            self.vision.eval()
        return self

    # ------------------------------------------------------------------------------------------------
    # Forward

    def encode_images(
        self,
        pixel_values: torch.Tensor,
        instruction_ids: torch.Tensor,
        instruction_mask: torch.Tensor,
        image_counts: torch.Tensor,
    ) -> torch.Tensor:
        """Visual tokens of every image, each tokenized with its own sample's instruction.

        Args:
            pixel_values: ``(N, 3, S, S)`` images of the whole batch, sample by sample.
            instruction_ids: ``(B, T)`` QFormer instruction ids, one row per sample.
            instruction_mask: ``(B, T)`` 1 on instruction tokens, 0 on padding.
            image_counts: ``(B,)`` images per sample, summing to ``N``.

        Returns:
            ``(N, L, D)`` visual tokens.
        """
        if any(p.requires_grad for p in self.vision.parameters()):
            features = self.vision(pixel_values)
        else:
            with torch.no_grad():
                features = self.vision(pixel_values)
        ids = instruction_ids.repeat_interleave(image_counts, dim=0)
        mask = instruction_mask.repeat_interleave(image_counts, dim=0)
        return self.tokenizer(features, ids, mask)

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        instruction_ids: torch.Tensor,
        instruction_mask: torch.Tensor,
        image_counts: torch.Tensor,
    ) -> torch.Tensor:
        """LLM input embeddings with the visual tokens at the ``<image>`` positions.

        Args:
            input_ids: ``(B, T_llm)`` token ids; ``k_b x L`` positions of sample ``b`` hold ``<image>``.
            pixel_values, instruction_ids, instruction_mask, image_counts: see :meth:`encode_images`.

        Returns:
            ``(B, T_llm, D)`` embeddings.

        Raises:
            ValueError: The number of ``<image>`` positions is not ``N x L``.
        """
        is_image = input_ids == self.image_token_id
        expected = int(image_counts.sum()) * self.num_queries
        if int(is_image.sum()) != expected or pixel_values.shape[0] != int(image_counts.sum()):
            raise ValueError(
                f"{int(is_image.sum())} <image> positions for {pixel_values.shape[0]} images x "
                f"{self.num_queries} queries (image_counts sum {int(image_counts.sum())})"
            )
        embeds = self.llm.get_input_embeddings()(input_ids)
        if expected == 0:
            return embeds
        visual = self.encode_images(pixel_values, instruction_ids, instruction_mask, image_counts)
        return embeds.masked_scatter(is_image.unsqueeze(-1), visual.to(embeds.dtype))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        instruction_ids: torch.Tensor,
        instruction_mask: torch.Tensor,
        image_counts: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> CausalLMOutputWithPast:
        """Teacher-forced pass.

        Args:
            input_ids: ``(B, T_llm)`` prompt and answer ids, right-padded.
            attention_mask: ``(B, T_llm)`` 1 on tokens, 0 on padding.
            pixel_values, instruction_ids, instruction_mask, image_counts: see :meth:`encode_images`.
            labels: ``(B, T_llm)`` answer ids, ``-100`` elsewhere.

        Returns:
            transformers' output. Without ``labels``: ``logits`` ``(B, T_llm, V)``. With ``labels``: ``loss``,
            the mean next-token cross-entropy (fp32) over the answer tokens (against Gaussian soft targets
            for coordinate tokens when ``coord_label_sigma > 0``), and ``logits`` ``(B, T_ans, V)``
            only for the positions ``start .. end - 1`` that predict an answer token of some sample (the LM
            head never runs on the prompt: no ``T_llm x V`` logits for long prompts and 33k vocabularies).
        """
        embeds = self.embed_inputs(input_ids, pixel_values, instruction_ids, instruction_mask, image_counts)
        if labels is None:
            return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
        targets = labels[:, 1:]  # position t predicts token t + 1
        active = (targets != IGNORE_INDEX).any(0).nonzero().flatten()
        start, end = (int(active[0]), int(active[-1]) + 1) if active.numel() else (0, 1)
        keep = torch.arange(start, end, device=input_ids.device)
        out = self.llm(
            inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep
        )
        span = targets[:, start:end]
        if active.numel() == 0:  # nothing to learn: a zero that keeps the graph connected
            out.loss = out.logits.sum() * 0.0
        else:
            smooth = self.coord_label_sigma > 0  # else no per-step host-to-device copy of the ids
            out.loss = answer_loss(
                out.logits.flatten(0, 1),
                span.flatten(),
                coord_token_ids=torch.tensor(self.coord_token_ids, device=span.device) if smooth else None,
                coord_label_sigma=self.coord_label_sigma,
            )
        return out

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        instruction_ids: torch.Tensor,
        instruction_mask: torch.Tensor,
        image_counts: torch.Tensor,
        *,
        max_new_tokens: int,
        eos_token_id: int,
        pad_token_id: int,
        synced_ranks: bool | None = None,
        grammar: CoordinateGrammar | None = None,
        answer_formats: Sequence[AnswerFormat] | None = None,
        return_cut: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding with a key/value cache, optionally constrained to the coordinate grammar.

        Args:
            prompt_ids: ``(B, T_p)`` prompt ids, **left**-padded.
            prompt_mask: ``(B, T_p)`` 1 on tokens, 0 on padding.
            pixel_values, instruction_ids, instruction_mask, image_counts: see :meth:`encode_images`.
            max_new_tokens: Most tokens generated per sample.
            eos_token_id: Ends a sample (kept in the output).
            pad_token_id: Fills a sample after its end.
            synced_ranks: Stop only when every process is done (an all-reduce per step). Needed under FSDP
                and any sharded model, where each forward is a collective: a process stopping early leaves
                the others waiting forever. ``None``: when ``torch.distributed`` runs more than one process.
            grammar: Constrained decoding (:mod:`~lightning_gpv.models.vistallm.constraints`): at each step
                the tokens the grammar forbids get ``-inf`` logits, so boxes and masks come out whole (a
                box opener is followed by exactly four coordinates, then a separator or the end) and no
                coordinate token appears outside a group. ``None`` (default): plain greedy decoding.
            answer_formats: ``B`` answer formats, one per sample (``answer_format(task)``); needed with
                ``grammar``.
            return_cut: Also return which answers the budget changed.

        Returns:
            ``(B, T_new)`` generated ids, ``T_new <= max_new_tokens``; with ``return_cut`` also ``(B,)`` bool,
            True where ``max_new_tokens`` changed the answer: it had no end token by then, or the grammar's
            budget rule made a token differ from the one the grammar allows without a budget (an object
            that no longer fit, a required one opened early). Such an answer lacks what the model would
            have written next.
        """
        if synced_ranks is None:
            synced_ranks = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        batch = prompt_ids.shape[0]
        if max_new_tokens <= 0:
            empty = prompt_ids.new_zeros(batch, 0)
            if return_cut:  # nothing written: every answer lacks its end
                return empty, torch.ones(batch, dtype=torch.bool, device=prompt_ids.device)
            return empty
        states: list[GrammarState] | None = None
        if grammar is not None:
            if answer_formats is None or len(answer_formats) != batch:
                raise ValueError(f"constrained decoding needs {batch} answer_formats, one per sample")
            states = [grammar.start(fmt) for fmt in answer_formats]
        embeds = self.embed_inputs(prompt_ids, pixel_values, instruction_ids, instruction_mask, image_counts)
        mask = prompt_mask.long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.llm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        done = torch.zeros(batch, dtype=torch.bool, device=prompt_ids.device)
        cut = torch.zeros_like(done)
        generated: list[torch.Tensor] = []
        embedding = self.llm.get_input_embeddings()
        for step in range(max_new_tokens):
            logits = out.logits[:, -1]
            if grammar is not None and states is not None:
                remaining = max_new_tokens - step
                allowed = grammar.mask(states, remaining, logits.shape[-1], logits.device)
                if return_cut and remaining <= grammar.budget_horizon:
                    # Farther from the end the budget's rules are the unbudgeted ones: compare only here.
                    unbudgeted = grammar.mask(states, None, logits.shape[-1], logits.device)
                    free = logits if unbudgeted is None else logits.masked_fill(~unbudgeted, float("-inf"))
                    chosen = logits if allowed is None else logits.masked_fill(~allowed, float("-inf"))
                    cut |= ~done & (chosen.argmax(-1) != free.argmax(-1))
                if allowed is not None:
                    logits = logits.masked_fill(~allowed, float("-inf"))
            token = logits.argmax(-1)
            token = torch.where(done, torch.full_like(token, pad_token_id), token)
            generated.append(token)
            done |= token == eos_token_id
            if grammar is not None and states is not None:
                states = [grammar.advance(state, t) for state, t in zip(states, token.tolist())]
            if len(generated) == max_new_tokens or _all_done(done, synced_ranks):
                break
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            positions = positions[:, -1:] + 1
            out = self.llm(
                inputs_embeds=embedding(token[:, None]),
                attention_mask=mask,
                position_ids=positions,
                past_key_values=out.past_key_values,
                use_cache=True,
            )
        tokens = torch.stack(generated, dim=1)
        if not return_cut:
            return tokens
        if grammar is not None and states is not None:  # only the end token may follow: a whole answer
            done = done | torch.tensor([grammar.must_end(s) for s in states], device=done.device)
        return tokens, cut | ~done


def _all_done(done: torch.Tensor, synced_ranks: bool) -> bool:
    """Whether every sample has ended: on this process, or on all of them when ``synced_ranks``."""
    flag = done.all().to(torch.int32)
    if synced_ranks:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag)
