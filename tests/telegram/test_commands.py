"""Every operator command over the real PTB client and the fake Bot API, good and bad."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ghapp.core.model import Project, TaskSource, TaskState
from ghapp.messaging.text import MAX_MESSAGE, units
from tests.telegram.conftest import CHAT, OTHER_CHAT, STRANGER, Rig, close, make_rig

GROUP = -100200300
OPERATOR, MEMBER = 7, 8


async def _with_projects(rig: Rig) -> None:
    await rig.store.add_project(Project("app", "octo/app", 1, is_default=True))
    await rig.store.add_project(Project("lib", "octo/lib", 1))


# -- help, unknown input, access ------------------------------------------------------------
async def test_help_lists_every_command_and_start_is_help(rig: Rig) -> None:
    reply = await rig.say("/help")
    for word in ("/task", "/status", "/cancel", "/retry", "/logs", "/budget", "/projects"):
        assert word in reply
    assert "/addproject" in reply and "/rmproject" in reply and "/create" in reply
    assert "at most $8.00" in reply
    assert (await rig.say("/start")) == reply
    commands = rig.fake.method_calls("setMyCommands")
    assert commands and '"command": "task"' in commands[0]["commands"]


async def test_unknown_command_and_plain_text_get_guidance(rig: Rig) -> None:
    reply = await rig.say("/frobnicate now")
    assert reply.startswith("Unknown command /frobnicate.") and "/task" in reply
    assert await rig.say("hello there") == "Send /help for the commands."
    # addressed to another bot in a group: not for us, so the next reply is to /status
    await rig.fake.inject(CHAT, "/status@some_other_bot")
    assert "Queue: 0 tasks" in await rig.say(f"/status@{rig.fake.username}")


async def test_unknown_chat_gets_no_answer_and_causes_no_action(rig: Rig) -> None:
    await _with_projects(rig)
    await rig.fake.inject(STRANGER, "/task add a backdoor")
    await rig.fake.inject(STRANGER, "/addproject evil octo/app --default")
    await rig.fake.inject(STRANGER, "/help")
    assert "Queue: 0 tasks" in await rig.say("/status")  # handled after the stranger's updates
    assert rig.fake.texts(STRANGER) == []
    assert await rig.store.count(TaskState.QUEUED) == 0
    assert [p.slug for p in await rig.store.projects()] == ["app", "lib"]


async def test_with_user_ids_only_those_users_command_in_an_allowed_group(
    tmp_path: Path,
) -> None:
    rig = await make_rig(tmp_path, chats=(GROUP,), user_ids=(OPERATOR,))
    try:
        await _with_projects(rig)
        for text in ("/task add a backdoor", "/addproject evil octo/app --default", "/help"):
            await rig.fake.inject(GROUP, text, user_id=MEMBER, chat_type="group")
        await rig.fake.inject(GROUP, "/status", user_id=OPERATOR, chat_type="group")
        await rig.fake.wait_for(lambda _: rig.fake.texts(GROUP) != [], 10)
        await asyncio.wait_for(rig.bot.outbox.idle(), 10)
        [reply] = rig.fake.texts(GROUP)  # only the operator's command was answered
        assert "Queue: 0 tasks" in reply
        assert await rig.store.count(TaskState.QUEUED) == 0
        assert [p.slug for p in await rig.store.projects()] == ["app", "lib"]
        await rig.fake.inject(GROUP, "/task fix the login", user_id=OPERATOR, chat_type="group")
        await rig.fake.wait_for(lambda _: len(rig.fake.texts(GROUP)) > 1, 10)
        assert await rig.store.count(TaskState.QUEUED) == 1
    finally:
        await close(rig)


async def test_without_user_ids_every_member_of_an_allowed_group_commands(
    tmp_path: Path,
) -> None:
    rig = await make_rig(tmp_path, chats=(GROUP,))
    try:
        await _with_projects(rig)
        await rig.fake.inject(GROUP, "/task fix the login", user_id=MEMBER, chat_type="group")
        await rig.fake.wait_for(lambda _: rig.fake.texts(GROUP) != [], 10)
        assert await rig.store.count(TaskState.QUEUED) == 1
    finally:
        await close(rig)


# -- projects ---------------------------------------------------------------------------------
async def test_addproject_good_and_bad(rig: Rig) -> None:
    assert "No projects yet" in await rig.say("/projects")
    assert "Usage: /projects" in await rig.say("/projects all")
    for bad, why in [
        ("/addproject", "give a slug and a repository"),
        ("/addproject app", "give a slug and a repository"),
        ("/addproject app octo/app extra", "give a slug and a repository"),
        ("/addproject Bad!slug octo/app", "not a valid slug"),
        ("/addproject app notarepo", "write it as owner/name"),
        ("/addproject app octo/app --force", "unknown option --force"),
    ]:
        reply = await rig.say(bad)
        assert why.lower() in reply.lower(), (bad, reply)
        assert "Usage: /addproject <slug> <owner/repo> [--default]" in reply, bad
    reply = await rig.say("/addproject app someone/else")
    assert "not installed on someone/else" in reply and "octo/app" in reply
    assert await rig.store.projects() == []  # nothing half-done
    assert "Added project app: octo/app as the default project." in await rig.say(
        "/addproject app OCTO/App"
    )
    assert await rig.say("/addproject lib octo/lib") == "Added project lib: octo/lib."
    assert "Updated project lib: octo/lib as the default" in await rig.say(
        "/addproject lib octo/lib --default"
    )
    listing = await rig.say("/projects")
    assert "app: octo/app\n" in listing and "lib: octo/lib (default)" in listing
    assert "installed on: octo/app, octo/lib" in listing


async def test_rmproject_good_and_bad(rig: Rig) -> None:
    await _with_projects(rig)
    assert "Usage: /rmproject <slug>" in await rig.say("/rmproject")
    assert "Usage: /rmproject <slug>" in await rig.say("/rmproject a b")
    assert "not a valid slug" in await rig.say("/rmproject ../x")
    assert "There is no project nope (projects: app, lib)." == await rig.say("/rmproject nope")
    reply = await rig.say("/rmproject app")
    assert reply.startswith("Removed project app (octo/app)") and "It was the default" in reply
    assert [p.slug for p in await rig.store.projects()] == ["lib"]


async def test_create_checks_its_argument_and_existing_projects(rig: Rig) -> None:
    """The GitHub side of /create is in tests/e2e/test_create.py against the fake GitHub."""
    await _with_projects(rig)
    assert "Usage: /create [<organization>/]<slug>" in await rig.say("/create")
    assert "not a valid slug" in await rig.say("/create -x")
    assert await rig.say("/create app") == "Project app already exists: octo/app."
    await rig.store.remove_project("lib")
    assert "/addproject lib octo/lib" in await rig.say("/create lib")
    assert "no GitHub App configured" in await rig.say("/create newthing")
    assert [p.slug for p in await rig.store.projects()] == ["app"]


# -- tasks ------------------------------------------------------------------------------------
async def test_task_needs_a_project_and_a_description(rig: Rig) -> None:
    reply = await rig.say("/task fix the login page")
    assert "no default project" in reply and "Usage: /task" in reply
    await _with_projects(rig)
    for bad, why in [
        ("/task", "Say what to do"),
        ("/task budget=2", "not only the budget"),
        ("/task lib: budget=2", "not only the budget"),
        ("/task fix it budget=lots", "budget must be a number"),
        ("/task fix it budget=9", "above the limit of $8"),
        ("/task fix it budget=0", "more than $0"),
        ("/task fix budget=1 budget=2", "at most once"),
        ("/task nope: fix it", "there is no project 'nope' (projects: app, lib)"),
    ]:
        reply = await rig.say(bad)
        assert why.lower() in reply.lower() and "Usage: /task" in reply, (bad, reply)
    assert await rig.store.count(TaskState.QUEUED) == 0


async def test_task_queues_on_default_or_named_project_with_synthetic_issue(rig: Rig) -> None:
    await _with_projects(rig)
    reply = await rig.say("/task add a /healthz endpoint\nwith a test budget=$2.5")
    assert reply.startswith("Queued task #1 on octo/app (app), position 1") and "$2.50" in reply
    reply = await rig.say("/task lib: bump the version")
    assert reply.startswith("Queued task #2 on octo/lib (lib), position 2") and "$5.00" in reply
    again = await rig.say("/task add a /healthz endpoint")  # same words, same second: still new
    assert again.startswith("Queued task #3 on octo/app")
    first, second, third = [await rig.store.get_task(i) for i in (1, 2, 3)]
    assert first and second and third
    assert first.source is TaskSource.TELEGRAM and first.requester == "telegram:operator"
    assert first.issue_number < 0 and first.issue_number != third.issue_number
    assert first.instructions == "add a /healthz endpoint\nwith a test" and first.budget_usd == 2.5
    assert first.title == "add a /healthz endpoint"
    assert first.branch and first.branch.startswith("mc/tg-") and first.branch != third.branch
    assert rig.forge.comments == [] and rig.forge.reactions == []  # no GitHub issue to talk on
    # the other chat hears about it; the asking chat got the reply instead of a duplicate
    await rig.fake.wait_text("Task #3 queued", chat_id=OTHER_CHAT)
    notice = await rig.fake.wait_text("Task #1 queued", chat_id=OTHER_CHAT)
    assert "octo/app (from Telegram)" in notice
    assert not any("Task #1 queued" in t for t in rig.fake.texts(CHAT))


async def test_task_on_a_repo_the_app_left(rig: Rig) -> None:
    await rig.store.add_project(Project("gone", "octo/gone", 1, is_default=True))
    reply = await rig.say("/task do it")
    assert "no longer installed on octo/gone" in reply
    assert await rig.store.count(TaskState.QUEUED) == 0


async def test_cancel_good_and_bad(rig: Rig) -> None:
    for bad in ("/cancel", "/cancel x", "/cancel 1 2", "/cancel 0", "/cancel -3"):
        reply = await rig.say(bad)
        assert "Usage: /cancel <task id>" in reply, bad
    assert await rig.say("/cancel 99") == "There is no task #99."
    queued = await rig.queue(issue=1)
    assert await rig.say(f"/cancel #{queued.id}") == f"Task #{queued.id} cancelled."
    assert (await rig.store.get_task(queued.id)).state is TaskState.CANCELLED  # type: ignore[union-attr]
    assert "already cancelled" in await rig.say(f"/cancel {queued.id}")
    rig.worker.block = True
    running = await rig.queue(issue=2)
    await rig.runner.fill()
    await asyncio.wait_for(rig.worker.started.wait(), 5)
    assert (await rig.say(f"/cancel {running.id}")).startswith(f"Stopping task #{running.id}")
    await asyncio.wait_for(rig.runner.drain(), 5)
    assert (await rig.store.get_task(running.id)).state is TaskState.CANCELLED  # type: ignore[union-attr]
    await rig.fake.wait_text(f"Task #{running.id} cancelled", chat_id=CHAT)


async def test_retry_good_and_bad(rig: Rig) -> None:
    assert "Usage: /retry <task id>" in await rig.say("/retry")
    assert "Usage: /retry <task id>" in await rig.say("/retry abc")
    assert await rig.say("/retry 5") == "There is no task #5."
    task = await rig.queue(issue=1)
    assert "is queued; only failed or cancelled" in await rig.say(f"/retry {task.id}")
    rig.worker.make_commits = 0
    await rig.run_all()
    reply = await rig.say(f"/retry {task.id}")
    assert reply == f"Task #{task.id} queued again as attempt 2, position 1 in the queue."
    await rig.service.cancel(task.id, "test")
    blocker = await rig.queue(issue=1)
    assert f"while task #{blocker.id} is active" in await rig.say(f"/retry {task.id}")


# -- status, logs, budget -----------------------------------------------------------------------
async def test_status_shows_running_queue_and_last_finished(rig: Rig) -> None:
    done = await rig.queue(issue=1, title="Finished one")
    await rig.run_all()
    rig.worker.make_commits = 0
    failed = await rig.queue(issue=2, title="Broken one")
    await rig.run_all()
    running = await rig.queue(issue=3, title="Busy one")
    claim = await rig.store.claim_next(rig.clock.now(), 10)
    assert claim.task and claim.task.id == running.id
    # metered spend so far; a figure the agent writes into its own log is not believed
    await rig.store.add_spend(running.id, 1, rig.clock.now(), 0.42)
    log = rig.write_log(running.id, [{"type": "result", "total_cost_usd": 99.0}])
    await rig.store.update(running.id, log_path=str(log))
    rig.clock.advance(seconds=125)
    q1 = await rig.queue(issue=4, title="Next one")
    q2 = await rig.queue(issue=5, title="Later one")
    assert "Usage: /status" in await rig.say("/status 3")
    reply = await rig.say("/status")
    assert f"Running #{running.id} octo/app#3 Busy one" in reply
    assert "2m 05s so far, about $0.42 of a $5.00 cap, attempt 1" in reply
    assert "Queue: 2 tasks" in reply
    assert reply.index(f"1. #{q1.id}") < reply.index(f"2. #{q2.id}")
    assert f"#{done.id} octo/app#1 Finished one: succeeded, $0.50, https://github.test/" in reply
    assert f"#{failed.id} octo/app#2 Broken one: failed, $0.50, the agent made no commits" in reply
    assert "Today: $1.42 of $10.00 spent" in reply


async def test_logs_are_rendered_and_fitted_into_one_message(rig: Rig) -> None:
    assert "Usage: /logs <task id>" in await rig.say("/logs")
    assert await rig.say("/logs 42") == "There is no task #42."
    task = await rig.queue(issue=1)
    assert "has not started yet" in await rig.say(f"/logs {task.id}")
    events: list[dict[str, object]] = [{"type": "system", "subtype": "init", "model": "m"}]
    for i in range(400):
        events.append(
            {
                "type": "assistant",
                "message": {
                    "content": [
                        {
                            "type": "tool_use",
                            "name": "Bash",
                            "input": {"command": f"step {i} " + "x" * 150},
                        }
                    ]
                },
            }
        )
    events.append(
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "total_cost_usd": 1.5,
            "result": "done",
        }
    )
    path = rig.write_log(task.id, events)
    with path.open("a") as handle:
        handle.write("not json at all\n")
    await rig.store.update(task.id, log_path=str(path))
    reply = await rig.say(f"/logs {task.id}")
    assert units(reply) <= MAX_MESSAGE
    assert reply.startswith(f"Task #{task.id} log, attempt 1 (queued), last ")
    assert reply.rstrip().endswith("done") and "tool Bash: step 399" in reply
    assert "step 349" not in reply  # only the last 50 readable lines are considered
    shown = int(reply.split("last ")[1].split(" ")[0])
    assert 10 < shown < 50 and len(reply.splitlines()) == shown + 1
    path.unlink()
    assert "cannot be read" in await rig.say(f"/logs {task.id}")
    path.write_text("garbage\n")
    assert "no readable lines yet" in await rig.say(f"/logs {task.id}")


async def test_budget_shows_spend_per_task_and_caps(rig: Rig) -> None:
    reply = await rig.say("/budget")
    assert "Spent $0.00 of $10.00" in reply and "No spend today." in reply
    assert "$5.00 a task by default, at most $8.00" in reply
    first = await rig.queue(issue=1, title="One")
    await rig.run_all()
    second = await rig.queue(issue=2, title="Two")
    await rig.run_all()
    assert "takes no arguments.\nUsage: /budget" in await rig.say("/budget 5")
    reply = await rig.say("/budget")
    assert "Spent $1.00 of $10.00; $0.00 held by running tasks; $9.00 left." in reply
    assert f"#{first.id} octo/app#1 One: $0.50" in reply and f"#{second.id} octo/app#2 Two" in reply
