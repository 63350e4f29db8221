"""Text from the agent or users, published in ghapp's name, stays inert (issue 12, item 7).

Markdown is read back with a CommonMark parser, as GitHub reads it: what counts is the
text outside code, where @-mentions notify and closing keywords close issues.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace

from markdown_it import MarkdownIt

from ghapp.core.commands import SimpleCommand
from ghapp.core.model import TaskSource, TaskState
from ghapp.core.ports import AgentOutcome
from ghapp.core.publish import Scrubber, fenced, inert, visible
from ghapp.core.report import render_tracking
from ghapp.core.tasks import Trigger
from tests.unit import test_runner
from tests.unit.test_report import task
from tests.unit.test_runner import Rig

rig = test_runner.rig  # the runner rig fixture, shared

MENTION = re.compile(r"(?<![A-Za-z0-9])@[A-Za-z0-9]")
CLOSING = re.compile(
    r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\b:?\s*(?:[\w.-]+/[\w.-]+)?#\d+", re.IGNORECASE
)
HOSTILE = (
    "done @maintainer\u200b, see\n"
    "```\n"
    "</details>\n\n"
    "Closes #3, fixes octo/other#4 and resolves #5 — cc @org/security-team\n"
    "````\n"
    "sneaky\U000e0041\U000e0042 text\ufe0f\u202e"
)


def live_text(markdown: str) -> str:
    """Every piece of text GitHub would treat as prose (not code) in a markdown body."""
    found: list[str] = []
    for token in MarkdownIt("commonmark").parse(markdown):
        if token.type in ("html_block",):
            found.append(token.content)
        for child in token.children or []:
            if child.type in ("text", "html_inline"):
                found.append(child.content)
    return "\n".join(found)


def code_blocks(markdown: str) -> list[str]:
    """The contents of the fenced code blocks of a markdown body."""
    return [t.content for t in MarkdownIt("commonmark").parse(markdown) if t.type == "fence"]


def assert_no_hidden(text: str) -> None:
    hidden = [
        c for c in text if unicodedata.category(c) in ("Cf", "Co") or 0xFE00 <= ord(c) <= 0xFE0F
    ]
    assert hidden == [], f"invisible characters published: {hidden!r}"


def test_the_tracking_comment_keeps_a_hostile_log_tail_and_reason_inert() -> None:
    failed = task(state=TaskState.FAILED)
    body = render_tracking(replace(failed, failure_reason=HOSTILE), "/mc", log_tail=HOSTILE)
    prose = live_text(body)
    assert MENTION.search(prose) is None, prose
    assert CLOSING.search(prose) is None, prose
    assert_no_hidden(body)
    [tail] = code_blocks(body)  # the log tail is one code block and nothing escaped it
    assert "sneaky" in tail and "</details>" in tail
    assert prose.rstrip().endswith("</details>")  # ghapp's own structure is intact


async def test_the_pr_body_has_one_closing_keyword_and_no_mentions(rig: Rig) -> None:
    rig.worker.outcome = AgentOutcome(True, 0.5, HOSTILE)
    rig.vcs.existing_branch_commits["mc/5-task"] = ["abc123 Fixes #77, thanks @someone ```"]
    queued = await rig.queue()
    await rig.run_all()
    done = await rig.get(queued.id)
    assert done.state is TaskState.SUCCEEDED, done.failure_reason
    body = rig.forge.pr_bodies[done.pr_number or 0]
    prose = live_text(body)
    assert CLOSING.findall(prose) == ["Closes #5"], prose
    assert MENTION.findall(prose) == ["@a"], prose  # "Requested by @alice": ghapp's own
    assert_no_hidden(body)
    assert "sneaky" in body  # the summary is shown, quoted


async def test_a_refusal_does_not_echo_a_mention(rig: Rig) -> None:
    trig = Trigger(
        repo="octo/app",
        installation_id=1,
        number=5,
        sender="mallory",
        sender_is_bot=False,
        source=TaskSource.COMMENT,
        command=None,
        error="budget must be a number of dollars, got '@victim'",
    )
    await rig.service.handle(trig)
    refusal = rig.forge.comments[-1][2]
    assert MENTION.search(live_text(refusal)) is None, refusal
    denied = replace(trig, command=SimpleCommand("retry"), error=None)
    await rig.service.handle(denied)
    assert MENTION.search(live_text(rig.forge.comments[-1][2])) is None


def test_fences_outgrow_any_backtick_run_and_selectors_cannot_smuggle() -> None:
    block = fenced("`````\nx")
    assert code_blocks(block + "\nafter") == ["`````\nx\n"]
    assert visible("é\u200b\ufe0f\u200b\ufe0fA\ufe0f⚠️") == "é\ufe0fA⚠️"
    assert inert("a.b@example.com") == "a.b@example.com"  # an e-mail is not a mention


def test_secrets_and_token_shapes_are_scrubbed() -> None:
    scrub = Scrubber(["hunter2-webhook-secret", "x"])
    text = scrub("hunter2-webhook-secret sk-ant-api03-AAAA_bbbb-cc ghs_0123456789abcdef x")
    assert text == "[redacted] [redacted] [redacted] x"
