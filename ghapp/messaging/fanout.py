"""One Messenger for several chats: every configured adapter hears every notice."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ghapp.core.ports import Messenger, Notice

log = logging.getLogger(__name__)


class FanOut:
    """Passes each notice to every messenger; one failing never keeps it from the others."""

    def __init__(self, messengers: Sequence[Messenger]) -> None:
        self.messengers = tuple(messengers)

    async def notify(self, notice: Notice) -> None:
        for messenger in self.messengers:
            try:
                await messenger.notify(notice)
            except Exception:
                log.exception("%s failed for %s", type(messenger).__name__, notice.kind)
