"""The verify gate: ghapp, not the agent, runs the base branch's checks on the final tree;
on red it may hand the agent the failure and check again. Also the PR text it leads to."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from ghapp.core.gate import (
    WORKFLOWS,
    CheckResult,
    OnRed,
    RepoSettings,
    changed_tests,
    checks_section,
    failure_text,
    green,
    touched,
)
from ghapp.core.model import Task
from ghapp.core.ports import AgentOutcome, Checks, StopReason, Vcs, Workspace
from ghapp.core.publish import code, fenced, quoted

log = logging.getLogger(__name__)
MIN_FIX_USD = 0.05  # below this, a fix round could not do anything useful

Track = Callable[[str], Awaitable[object]]  # shows the gate's state on the tracking comment
Fix = Callable[[str, float], Awaitable[AgentOutcome]]  # an agent run given the failure, budget


@dataclass
class Gate:
    """What ghapp's own run of the repository's verify commands said, last round."""

    results: list[CheckResult]
    rounds: int = 1
    flags: list[str] = field(default_factory=list)

    @property
    def green(self) -> bool:
        return green(self.results)

    def line(self) -> str:
        """One line for the tracking comment."""
        passed = sum(r.passed for r in self.results)
        word = "passed" if self.green else "failed"
        rounds = f" after {self.rounds} rounds" if self.rounds > 1 else ""
        return f"verify {word}{rounds}: {passed} of {len(self.results)} commands passed"

    def report(self, *, section: bool) -> str:
        """The line, and with `section` the Checks section below it (for a PR whose
        description ghapp does not rewrite: a follow-up's checks go in its tracking comment)."""
        if not section:
            return self.line()
        return (
            f"{self.line()}\n{checks_section(self.results, flags=self.flags, rounds=self.rounds)}"
        )


async def verify(
    vcs: Vcs,
    checks: Checks,
    ws: Workspace,
    settings: RepoSettings,
    outcome: AgentOutcome,
    *,
    base: str,
    stop: asyncio.Event,
    budget_left: Callable[[], float],
    track: Track,
    fix: Fix,
) -> tuple[AgentOutcome, Gate | None]:
    """Verify with the network off; with on_red fix, up to verify_retries agent rounds.

    No gate (None) for a run that did not complete, made no commits since `base`, or a
    repository without verify commands. Each round's tree is put back exactly as verified,
    so what is pushed is what passed. A stop (cancel, lost lease) ends it as cancelled.
    """
    if not (outcome.completed and settings.verify and await vcs.commits_since(ws, base)):
        return outcome, None
    first_red: str | None = None
    rounds = fixes = 0
    while True:
        rounds += 1
        await track(f"running verify ({len(settings.verify)} commands), round {rounds}")
        head = await vcs.head(ws)
        results = await checks.run(
            settings.verify,
            ws,
            network=False,
            timeout_s=settings.verify_timeout_s,
            stop=stop,
            keep_going=True,
        )
        await vcs.reset(ws, head)
        if stop.is_set():
            return replace(outcome, completed=False, stopped=StopReason.CANCELLED), Gate(results)
        if green(results):
            break
        first_red = first_red or head
        if settings.on_red is not OnRed.FIX or fixes >= settings.verify_retries:
            break
        left = budget_left()
        if left < MIN_FIX_USD:
            log.info("no budget left for a fix round ($%.2f)", left)
            break
        fixes += 1
        await track(f"verify failed; the agent is fixing it (fix {fixes})")
        again = await fix(failure_text(results), left)
        await vcs.rescue(ws)
        outcome = replace(
            outcome,
            cost_usd=outcome.cost_usd + again.cost_usd,
            summary=f"{outcome.summary.strip()}\n\nAfter the checks failed: "
            f"{again.summary.strip() or '(no summary)'}",
            egress_blocked=outcome.egress_blocked or again.egress_blocked,
        )
        if not again.completed:
            fixes = settings.verify_retries  # verify what it left, but no further round
    gate = Gate(results, rounds)
    if first_red is not None and gate.green:
        tests = changed_tests(await vcs.changed_files(ws, first_red))
        if tests:
            shown = ", ".join(code(p) for p in tests[:20])
            gate.flags.append(f"Tests were changed to pass: {shown}.")
    return outcome, gate


async def run_setup(
    checks: Checks, ws: Workspace, settings: RepoSettings, stop: asyncio.Event, track: Track
) -> CheckResult | None:
    """The repository's setup commands before the agent, with its network; the failed one."""
    if not settings.setup:
        return None
    await track(f"running setup ({len(settings.setup)} commands)")
    results = await checks.run(
        settings.setup,
        ws,
        network=True,
        timeout_s=settings.verify_timeout_s,
        stop=stop,
        keep_going=False,
    )
    if stop.is_set():
        return None
    return next((r for r in results if not r.passed), None)


def workflow_refusal(changed: Sequence[str]) -> str | None:
    """Why nothing may be pushed: the change touches .github/workflows/."""
    workflows = touched(changed, [WORKFLOWS])
    if not workflows:
        return None
    listed = ", ".join(code(p) for p in workflows[:20])
    return (
        f"the change touches {listed}: ghapp never pushes .github/workflows/, so nothing was pushed"
    )


def block_reason(gate: Gate | None, settings: RepoSettings) -> tuple[str, str] | None:
    """Why a red gate opens no pull request (on_red: block), and the first failure's tail."""
    if gate is None or gate.green or settings.on_red is not OnRed.BLOCK:
        return None
    failed = [r for r in gate.results if not r.passed]
    names = ", ".join(code(r.command) for r in failed)
    return f"verify failed ({names}) and on_red is block: no pull request", failed[0].tail


def pr_body(
    task: Task,
    outcome: AgentOutcome,
    commits: list[str],
    duration_s: float,
    gate: Gate | None = None,
    protected: list[str] | None = None,
) -> str:
    """The pull request description: summary, commits, checks, cost, and the issue it closes."""
    origin = (
        f"Requested from {task.source.value.title()}"
        if task.source.from_chat
        else f"Requested by @{task.requester}"
    )
    lines = [
        quoted(outcome.summary.strip()[:20_000]) or "(the agent gave no summary)",
        "",
        "### Commits",
        fenced("\n".join(commits[:100])),
        "",
        f"{origin}. MissionControl task #{task.id}, attempt {task.attempt}; "
        f"cost ${task.cost_usd + outcome.cost_usd:.2f}; agent time {duration_s:.0f} s.",
    ]
    if gate is not None:
        lines += ["", checks_section(gate.results, flags=gate.flags, rounds=gate.rounds)]
        if not gate.green:
            lines += ["", "The checks failed, so this pull request is a draft."]
    if protected:
        paths = "\n".join(f"- {code(p)}" for p in protected[:100])
        lines += [
            "",
            "### Protected paths",
            "This change touches paths the repository protects, so it is a draft for a "
            f"maintainer to review:\n{paths}",
        ]
    if outcome.egress_blocked:
        lines += ["", f"Network {outcome.egress_blocked} (allow with MC_AGENT_ALLOW_HOSTS)."]
    if task.has_issue and not task.is_pull_request:
        lines += ["", f"Closes #{task.issue_number}"]
    return "\n".join(lines)
