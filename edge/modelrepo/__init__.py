"""Versioned model repositories: a folder of numbered versions (``detector/1/``,
``detector/2/``, each a model directory as :mod:`edge.models` defines it), served by the daemon
at its highest valid version (or a pinned one) and swapped when a newer one arrives.

- :mod:`edge.modelrepo.scan`: the folder's versions and the checks that need no runtime
  (complete file, the TFLite structure check, ``sha256`` from the manifest);
- :mod:`edge.modelrepo.probe`: loading and running a version in a child process first, so a
  model that crashes the runtime kills the child, never the daemon;
- :mod:`edge.modelrepo.watch`: the daemon's ``models-watch`` thread, which polls the folders
  and makes new versions ready (verified, loaded, warmed up) for the main thread to swap in.
"""
