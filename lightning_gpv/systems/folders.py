"""What both systems share about model folders: uploading the folder ``save_pretrained`` writes."""

from __future__ import annotations

from functools import partial
from typing import Any

from lightning_gpv.models.hub import push_folder


class PushToHubMixin:
    """``push_to_hub`` for a system whose ``save_pretrained(folder, **options)`` writes a model folder."""

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload lightning-gpv model",
        **options: Any,
    ) -> str:
        """Upload the folder :meth:`save_pretrained` writes (with ``options``, e.g. VistaLLM's ``adapter``) to
        the hub repository ``repo_id`` (created when missing); it then loads by that name wherever the hub is
        reachable. Returns the commit's URL.

        Args:
            repo_id: ``"user/name"``.
            private, token, commit_message: As for ``huggingface_hub.HfApi``.
            options: Keyword arguments of :meth:`save_pretrained`.
        """
        write = partial(self.save_pretrained, **options)  # type: ignore[attr-defined]
        return push_folder(write, repo_id, private=private, token=token, commit_message=commit_message)
