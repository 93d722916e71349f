"""Slurm's pending-reason codes in words a desktop user understands (data, not code).

The codes are Slurm's ``job_reason`` strings (``squeue -o %r``, ``state_reason`` in
``squeue --json``); a code that is not listed is shown as Slurm wrote it.
"""

from __future__ import annotations

REASON_WORDS: dict[str, str] = {
    "None": "waiting to be scheduled",
    "Priority": "other jobs with higher priority are ahead in the queue",
    "Resources": "waiting for free resources (the nodes are busy)",
    "Dependency": "waiting for a job it depends on",
    "DependencyNeverSatisfied": "a job it depends on failed: it will never start",
    "BeginTime": "its requested start time has not come yet",
    "JobHeldUser": "held by you (release it or cancel it)",
    "JobHeldAdmin": "held by an administrator",
    "ReqNodeNotAvail": "a node it needs is unavailable (down, drained or reserved)",
    "PartitionTimeLimit": "the time limit is longer than the partition allows",
    "PartitionNodeLimit": "more nodes than the partition allows",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "PartitionConfig": "the partition cannot run this request",
    "QOSMaxJobsPerUserLimit": "you already run as many jobs as your QOS allows",
    "QOSMaxSubmitJobPerUserLimit": "you have submitted as many jobs as your QOS allows",
    "QOSMaxCpuPerUserLimit": "you already use as many CPUs as your QOS allows",
    "QOSMaxGRESPerUser": "you already use as many GPUs as your QOS allows",
    "QOSMaxWallDurationPerJobLimit": "the time limit is longer than your QOS allows",
    "QOSGrpCpuLimit": "your group uses all the CPUs its QOS allows",
    "QOSGrpGRES": "your group uses all the GPUs its QOS allows",
    "AssocMaxJobsLimit": "your account already runs as many jobs as it may",
    "AssocGrpCpuLimit": "your account uses all the CPUs it may",
    "AssocGrpGRES": "your account uses all the GPUs it may",
    "AssociationJobLimit": "your account already runs as many jobs as it may",
    "Reservation": "waiting for its reservation to start",
    "Licenses": "waiting for licenses",
    "NodeDown": "a node it needs is down",
    "BadConstraints": "no node can satisfy the requested constraints",
    "InvalidAccount": "the account is invalid",
    "InvalidQOS": "the QOS is invalid",
    "Configuring": "its nodes are being prepared",
    "launch failed requeued held": "its launch failed; it is held",
    "JobArrayTaskLimit": "the job array runs as many tasks as it may",
    "MaxJobsPerUser": "you already run as many jobs as allowed",
}


def reason_words(code: str) -> str:
    """``"Resources"`` → words; unknown codes come back as they are ("" for none)."""
    if not code:
        return REASON_WORDS["None"]
    return REASON_WORDS.get(code, code)
