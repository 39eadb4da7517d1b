"""Where things are: the model-artifact layout and the workspace (CHORUS_HOME) layout.

The ground floor of chorus: it imports nothing of the project, and training, export, the service
and the benchmarks all read file names and config keys from here.
"""
