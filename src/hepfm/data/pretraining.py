"""The pretraining task names: the one list, and its parts by the kind of example each task reads.

The loaders below the trainer (events: :mod:`hepfm.data.datasets`, jets: :mod:`hepfm.data.jets`), the
training workflows, the study and the command line all take their task names from here (multi-task
pretraining: :data:`MULTI_TASK` with some of :data:`HEADS`). Each name is
also a registered training task (:data:`hepfm.train.tasks.TASKS`), the class that holds its loss.
"""

#: Pretraining tasks whose examples are events (their objects); the masked task reads them like multiclass.
EVENT_PRETRAINING_TASKS = ("multiclass", "multilabel", "masked")
#: Pretraining tasks whose examples are jets (their constituents).
JET_PRETRAINING_TASKS = ("jet-tagging",)
#: Every pretraining task, in the order a study pretrains them.
PRETRAINING_TASKS = EVENT_PRETRAINING_TASKS + JET_PRETRAINING_TASKS
#: Pretraining tasks whose models can be published under a name (their outputs name processes or labels).
PUBLISHABLE_TASKS = ("multiclass", "multilabel")

#: The multi-task pretraining task: several heads on one backbone (:class:`hepfm.train.tasks.MultiTask`).
MULTI_TASK = "multi"
#: The heads a multi-task pretraining may combine, each named by its task; ``origin`` and ``heavy`` read the
#: per-object origins and heavy-particle kinematics of stores generated with them.
HEADS = ("multiclass", "multilabel", "origin", "heavy", "masked")
