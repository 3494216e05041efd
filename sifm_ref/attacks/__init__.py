"""Immunization methods sharing one PGD engine (see sifm_ref.attacks.pgd)."""
