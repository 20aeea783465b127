"""Every read and write verl-ext makes of verl 0.9.1's TransferQueue (the v1 trainer's store of rollout rows), in
one place: if verl drops TransferQueue (its ``neo`` branch does: docs/verl_upgrade.md), this module is what changes.

verl's v1 agent loop stores a question's sessions under ``{question uid}_{session}_{index}`` keys (its
``AgentLoopWorkerTQ`` contract; uids are UUIDs, so the question is everything before the last two underscores) and
tags each question with its status (``running`` / ``finished`` / ``failure``), which the replay buffer polls.
"""

from __future__ import annotations


def question_of_key(key: str) -> str:
    parts = key.rsplit("_", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"TransferQueue key {key!r} is not '<question uid>_<session>_<index>' (verl's v1 agent loop).")
    return parts[0]


def row_key(question_uid: str, session: int, index: int = 0) -> str:
    return f"{question_uid}_{session}_{index}"


async def set_question_status(question_uid: str, status: str, partition: str = "train") -> None:
    """Tag a question ``running`` / ``finished`` / ``failure`` for verl's replay buffer."""
    import transfer_queue as tq

    await tq.async_kv_put(key=question_uid, partition_id=partition, tag={"status": status})


async def put_row_fields(keys: list[str], rows: list[dict], partition: str = "train") -> None:
    """Write per-row fields (one dict per key) beside what verl's post-processing stored for those rows."""
    import transfer_queue as tq
    from tensordict import TensorDict
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    fields = list_of_dict_to_tensordict(rows)
    await tq.async_kv_batch_put(keys=keys, partition_id=partition, fields=TensorDict(dict(fields), batch_size=len(rows)))


def extra_fields_of(batch) -> tuple[list[dict], list[str]]:
    """(each real row's ``extra_fields``, its question uid) of a training batch's metadata (``KVBatchMeta``);
    padding rows verl adds are left out."""
    import transfer_queue as tq

    keys = [k for k, tag in zip(batch.keys, batch.tags) if not tag.get("is_padding", False)]
    if not keys:
        return [], []
    data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["extra_fields"])
    extra = [e if isinstance(e, dict) else {} for e in data.pop("extra_fields").tolist()]
    return extra, [question_of_key(k) for k in keys]
