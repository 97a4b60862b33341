"""What every stage shares and that is no stage's own: errors and exit codes (:mod:`common.errors`),
atomic files and checksums (:mod:`common.files`), Ctrl-C between steps (:mod:`common.interrupt`)
and the option declarations the configs and parsers are generated from (:mod:`common.options`).

No torch, no scikit-learn, no h5py here: the store, both stages and the report import it.
"""
