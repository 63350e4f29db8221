"""An attempt's end: its terminal state written once, then the issue, operator and budget told."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from datetime import date

from ghapp.core.attempt import Attempt, Ending
from ghapp.core.model import LeaseLost, Task, TaskState, utc_day
from ghapp.core.ports import Clock, LogReader, NoticeKind, TaskStore
from ghapp.core.report import Reporter

log = logging.getLogger(__name__)
_BUDGET_LEVELS = ((NoticeKind.BUDGET_80, 0.8), (NoticeKind.BUDGET_EXHAUSTED, 1.0))


class Finisher:
    """Writes how tasks end and shows it on the tracking comment and to the operator."""

    def __init__(
        self,
        store: TaskStore,
        reporter: Reporter,
        clock: Clock,
        daily_budget_usd: float,
        logs: LogReader | None = None,
    ) -> None:
        self.store, self.reporter, self.clock = store, reporter, clock
        self.daily_budget_usd, self.logs = daily_budget_usd, logs
        self._budget_alerts: set[tuple[date, NoticeKind]] = set()

    async def track(
        self,
        task: Task,
        log_tail: str = "",
        position: int | None = None,
        notes: str = "",
        gate: str = "",
    ) -> Task:
        """Write the tracking comment; remember its id if this call had to create it."""
        comment_id = await self.reporter.track(
            task, log_tail=log_tail, position=position, notes=notes, gate=gate
        )
        if comment_id is None or task.tracking_comment_id is not None:
            return task
        with contextlib.suppress(Exception):
            await self.store.update(task.id, tracking_comment_id=comment_id)
        return replace(task, tracking_comment_id=comment_id)

    async def finish(self, attempt: Attempt, ending: Ending) -> None:
        """Write the terminal state and cost, then tell everyone; a lost lease only books."""
        task, cost = attempt.task, attempt.cost_usd
        try:
            done = await self.store.finish(
                task.id,
                ending.state,
                self.clock.now(),
                cost,
                lease=attempt.lease,
                failure_reason=ending.reason,
            )
        except LeaseLost:
            log.warning(
                "task %s: attempt %s lost its lease to another worker; booked its cost $%.2f",
                task.id,
                attempt.lease.attempt,
                cost,
            )
            return
        except Exception:
            log.exception("could not record the end of task %s", task.id)
            return
        await self.report(done, cost, ending.notes, gate=ending.gate, tail=ending.tail)

    async def report(
        self, done: Task, cost: float = 0.0, notes: str = "", gate: str = "", tail: str = ""
    ) -> None:
        """Tell the issue and the operator how a task ended, then check the day's budget.

        A failed task shows the tail given (a failed check's output) or its log's last lines.
        """
        if not tail and done.state is TaskState.FAILED and done.log_path and self.logs:
            with contextlib.suppress(Exception):
                tail = "\n".join((await self.logs.tail(done))[-15:])[-3000:]
        await self.track(done, log_tail=tail, notes=notes, gate=gate)
        if done.state is TaskState.SUCCEEDED:
            await self.reporter.react(done, "rocket")
            text = f"Task #{done.id}: pull request {done.pr_url} (cost ${cost:.2f})"
            await self.reporter.notify(NoticeKind.PR_OPENED, text, done)
        elif done.state is TaskState.FAILED:
            await self.reporter.react(done, "confused")
            text = f"Task #{done.id} failed: {done.failure_reason} (cost ${cost:.2f})"
            await self.reporter.notify(NoticeKind.FAILED, text, done)
        else:
            text = f"Task #{done.id} cancelled: {done.failure_reason}"
            await self.reporter.notify(NoticeKind.CANCELLED, text, done)
        await self._budget_alert()

    async def _budget_alert(self) -> None:
        """Warn the operator once a day at 80% and when the budget is used up."""
        day = utc_day(self.clock.now())
        view = await self.store.budget(day, self.daily_budget_usd)
        daily = self.daily_budget_usd
        if daily <= 0:
            return
        for level, threshold in _BUDGET_LEVELS:
            if (
                view.spent_usd >= daily * threshold - 1e-9
                and (day, level) not in self._budget_alerts
            ):
                self._budget_alerts.add((day, level))
                await self.reporter.notify(
                    level, f"Daily budget: ${view.spent_usd:.2f} of ${daily:.2f} spent ({day})"
                )
