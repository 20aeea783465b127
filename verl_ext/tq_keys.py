"""The TransferQueue keys of verl's v1 agent loop, written and read in one place: a question's sessions are stored
under ``{question uid}_{session}_{index}`` (verl's ``AgentLoopWorkerTQ`` contract; uids are UUIDs, so the question
is everything before the last two underscores)."""


def session_key(question_uid: str, session: int, index: int = 0) -> str:
    return f"{question_uid}_{session}_{index}"


def question_of_key(key: str) -> str:
    parts = key.rsplit("_", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"TransferQueue key {key!r} is not '<question uid>_<session>_<index>' (verl's v1 agent loop).")
    return parts[0]
