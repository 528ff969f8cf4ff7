"""What the ``memory-r1`` commands run (the app layer, between the library and :mod:`memory_r1.cli`).

Each command has one frozen run configuration, built once from its click options
(``from_options``), and one function that takes it:

* :mod:`memory_r1.app.sft` - :class:`~memory_r1.app.sft.SftRun`, :func:`~memory_r1.app.sft.run_sft`
* :mod:`memory_r1.app.train` - :class:`~memory_r1.app.train.TrainRun`,
  :func:`~memory_r1.app.train.run_train` (recipe pieces in :mod:`memory_r1.app.recipe`)
* :mod:`memory_r1.app.evaluate` - ``eval answer-agent`` / ``eval memory-manager``
* :mod:`memory_r1.app.locomo` - ``eval locomo``
* :mod:`memory_r1.app.bench` - ``bench locomo | longmemeval | msc``
* :mod:`memory_r1.app.common` / :mod:`memory_r1.app.policy` - helpers they share.

Importing any of these modules does not import torch; the functions do.
"""
