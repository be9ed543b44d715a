"""A chat bot serving several users at once, with a memory of each conversation.

    pip install 'llm-inproc[demo]'      # the default model, SmolLM2-135M-Instruct
    python examples/bot.py [memory.json]    # default: a file in the temp directory

Four simulated users talk to the bot at the same time, two turns each. One Session
generates up to ``Options.parallel`` replies together; each conversation keeps its
history in ``Memory`` (per user and channel), so its next turn reuses the KV cache
of its slot and only the new messages are evaluated (see "reused" at the end).
Replace USERS with your chat platform's events (Discord, Slack, ...) to make it real.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from llm_inproc import Memory, Message, Options, Reply, Role, Session

SYSTEM = "You are a friendly assistant in a chat room. Answer in one or two sentences."
USERS = {  # (user, channel): what they say, one turn after the other
    ("alice", "#general"): ["What is the capital of France?", "Which river runs through it?"],
    ("bob", "#general"): ["Name a fruit that is yellow.", "Is it good for breakfast?"],
    ("carol", "#random"): ["Give me a name for a black cat.", "Why that name?"],
    ("dave", "dm"): ["How many legs does a spider have?", "And an ant?"],
}


async def answer(session: Session, memory: Memory, user: str, channel: str, text: str) -> Reply:
    """Reply to one message, streaming it out sentence by sentence as a bot would."""
    conversation = memory.get(user, channel)
    if not conversation.messages:
        conversation.messages.append(Message(Role.SYSTEM, SYSTEM))
    conversation.messages.append(Message(Role.USER, text))
    print(f"{user} says: {text}", flush=True)
    stream = session.aprompt_streaming(conversation.messages, max_tokens=32, temperature=0)
    pending = ""
    async with stream:  # closing it early (e.g. the user left) stops generation
        async for piece in stream:
            pending += piece
            if pending.rstrip().endswith((".", "!", "?", "\n")):  # send whole sentences
                print(f"bot to {user}: {pending.strip()}", flush=True)
                pending = ""
    if pending.strip():
        print(f"bot to {user}: {pending.strip()}", flush=True)
    assert stream.reply is not None
    conversation.messages.append(Message(Role.ASSISTANT, stream.reply.text))
    return stream.reply


async def talk(session: Session, memory: Memory, user: str, channel: str) -> list[Reply]:
    """One simulated user: each turn waits for the bot's reply to the previous one."""
    return [await answer(session, memory, user, channel, t) for t in USERS[user, channel]]


async def main(path: Path) -> None:
    memory = Memory()
    if path.exists():
        memory.load_file(path)  # conversations continue where the last run left them
        memory.forget()  # except those idle for a day
    with Session(Options(parallel=len(USERS), context_length=4096)) as session:
        replies = await asyncio.gather(*(talk(session, memory, u, c) for u, c in USERS))
    memory.save_file(path)
    print("\nuser   turn  evaluated  reused  generated  first token")
    for (user, _), turns in zip(USERS, replies, strict=True):
        for i, r in enumerate(turns, 1):
            ttft = r.time_to_first_token.total_seconds()
            print(
                f"{user:6} {i:4} {r.prompt.count:10} {r.cached_tokens:7} "
                f"{r.generated.count:10} {ttft:11.2f}s"
            )
    print(f"memory saved to {path}")


if __name__ == "__main__":
    default = Path(tempfile.gettempdir()) / "llm-inproc-bot-memory.json"
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else default))
