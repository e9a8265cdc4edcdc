"""Sweeps: a grid of training jobs (each train → eval → report) on this machine or on SLURM.

- ``spec``: the sweep file (experiment, overrides, grid, eval, report, resources) and its points.
- ``launch``: plan (resolve, validate and save every job's config), skip what is done, run the
  rest through submitit (``LocalExecutor`` N at a time, or SLURM job arrays).
- ``job``: ``SweepJob``, one requeueable submitit job: train with resume, hand a preemption to
  submitit to requeue after the checkpoint, evaluate, record devices and state.
- ``state``: the sweep directory's files and each job's state.
- ``report``: one markdown table and one PNG across the grid, CIs over seeds.

Heavy imports (jax) happen inside functions: a submitit job unpickles ``SweepJob`` before it
decides which devices JAX may use.
"""
