"""This machine: the distribution's bcc (:mod:`.bccloader`), kernel headers for it
(:mod:`.headers`), ``rawsys-trace setup`` (:mod:`.provision`) and the cache (:mod:`.cache`)."""
