"""Why gradient descent needs many steps: curvature spectra and measured convergence.

* `lanczos`: Lanczos with full reorthogonalisation on a flat matvec: extreme eigenvalues
  with residual bounds, stochastic Lanczos quadrature densities.
* `operators`: a workload's Hessian or Gauss–Newton operator (all parameters or a subset)
  as a flat matvec.
* `lm_head`: the exact `H_D ⊗ I_V` curvature of the lm_head MSE problem from Gram
  statistics, exact Newton on it, exact GD step counts from its spectrum.
* `convergence`: observed order, linear rate, predicted steps (GD, heavy ball, Newton–CG)
  and `run_to_target` to measure them.
"""
