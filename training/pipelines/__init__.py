"""The commands that train and ship a device model end to end (GA+RF, ensembles): the top layer of the
workstation, above training (:mod:`training`) and conversion (:mod:`convert`), which never import it."""
