"""What a run ended as, from the CLI's stream and ghapp's own reasons for stopping it."""

from __future__ import annotations

from ghapp.agent.metering import Account
from ghapp.agent.stream import ResultInfo, StreamState, clip
from ghapp.core.ports import AgentOutcome, AgentRequest, StopReason

SUMMARY_CHARS = 8000

HALTS = {
    StopReason.TIMEOUT: "stopped: soft timeout of {s:g}s",
    StopReason.CANCELLED: "stopped (cancelled)",
    StopReason.BUDGET: "budget reached: the attempt spent ${spent:.2f} of its ${cap:.2f} cap",
    StopReason.DISK: "disk limit: the attempt wrote more than its MC_AGENT_DISK_MB",
    StopReason.LEASE_LOST: "stopped: this worker lost its lease on the task",
}


def outcome_of(
    state: StreamState,
    code: int | None,
    stopped: StopReason | None,
    stderr: list[str],
    request: AgentRequest,
    account: Account,
) -> AgentOutcome:
    """Turn what the stream said into the port's outcome; the cost is the proxy's, set later."""
    res = state.result
    status = f"exit status {code}"
    halt = ""
    if stopped is not None:
        halt = HALTS[stopped].format(
            s=request.soft_timeout_s, spent=account.spent_usd, cap=account.cap_usd
        )
    if res is None:
        why = [halt or "the agent ended without a result line", status]
        if stderr:
            why.append("stderr: " + " | ".join(stderr))
        return AgentOutcome(False, 0.0, reason="; ".join(why), exit_code=code, stopped=stopped)
    reason = None if res.success else "; ".join(p for p in (halt, _why(res), status) if p)
    return AgentOutcome(
        completed=res.success and stopped is None,
        cost_usd=0.0,
        summary=res.text[:SUMMARY_CHARS],
        reason=reason,
        subtype=res.subtype,
        is_error=res.is_error,
        permission_denials=res.permission_denials,
        exit_code=code,
        stopped=stopped,
        num_turns=res.num_turns,
    )


def _why(res: ResultInfo) -> str:
    """Why a result is not a success, in the CLI's own words."""
    if res.subtype != "success":
        detail = "; ".join(res.errors) or res.terminal_reason or ""
        return clip(f"{res.subtype}: {detail}" if detail else res.subtype, 1000)
    if res.is_error:
        return clip(f"agent error: {res.text or 'no detail'}", 1000)
    return f"{res.permission_denials} tool call(s) denied permission"
