"""Exact least squares for linear layers under the MSE loss against scaled one-hots.

* `stats`: streaming Gram statistics (`GramStats`: XᵀX, XᵀY, tr YᵀY, count), loss from them.
* `solvers`: pinv / lstsq / qr on the data, cholesky / eigh / normal_inverse on statistics.
* `ridge`: many ridge values from one eigendecomposition; pick by validation loss.
* `sharding`: statistics reduced over a `data` mesh axis.
* `alternating`: exact block updates of every weight of the linear mixer.
"""
