"""Pruning methods (docs/methods.md) and the math they share (docs/methods.md#shared-notation, in
`shared`).

Every method is a pure function of the latent parameters: W = Ŵ ⊙ ψ(Ŵ), with masks never
stored inside the model. `shared` holds the pieces common to all of them: the (G, I, O) view,
the band-stop, group statistics, threshold scale, temperature annealing, the budget loss and
the exact export of crisp masks.
"""
