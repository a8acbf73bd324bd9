"""VistaLLM: EVA-CLIP encoder, instruction-guided QFormer tokenizer, causal LM writing coordinates."""
