"""The workstation an installed BodyDouble lives on: where things are (``locations``), its GPUs (``gpus``) and
``bodydouble doctor`` (``doctor``, ``doctor_local``). Shared by the installer (installer/install.py puts this
package on its path before anything is installed: standard library only here) and the command line; hosts
never import it."""
