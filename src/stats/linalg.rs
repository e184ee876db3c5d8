//! Linear solvers for ARL equations: dense LU (Brook–Evans and Nyström
//! systems, a few hundred unknowns) and BiCGSTAB for sparse chains (run-rule
//! Markov chains, thousands of states).

use ndarray::{Array1, Array2};

/// Solves A x = b by LU with partial pivoting. `None` if A is singular.
pub fn solve_dense(a: Array2<f64>, b: Array1<f64>) -> Option<Array1<f64>> {
    let n = a.nrows();
    assert_eq!(n, a.ncols(), "square matrix");
    assert_eq!(n, b.len(), "matching right-hand side");
    // Work on a flat row-major copy: slice loops vectorise, index checks vanish.
    let mut m: Vec<f64> = a.iter().copied().collect();
    let mut b: Vec<f64> = b.to_vec();
    for k in 0..n {
        let (p, pmax) = (k..n)
            .map(|i| (i, m[i * n + k].abs()))
            .fold((k, -1.0), |acc, x| if x.1 > acc.1 { x } else { acc });
        if pmax <= 1e-300 || !pmax.is_finite() {
            return None;
        }
        if p != k {
            for j in 0..n {
                m.swap(k * n + j, p * n + j);
            }
            b.swap(k, p);
        }
        let (upper, lower) = m.split_at_mut((k + 1) * n);
        let pivot_row = &upper[k * n..k * n + n];
        let pivot = pivot_row[k];
        let bk = b[k];
        for (r, row) in lower.chunks_exact_mut(n).enumerate() {
            let f = row[k] / pivot;
            if f != 0.0 {
                row[k] = 0.0;
                for (x, y) in row[k + 1..].iter_mut().zip(&pivot_row[k + 1..]) {
                    *x -= f * y;
                }
                b[k + 1 + r] -= f * bk;
            }
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let row = &m[i * n..(i + 1) * n];
        let s: f64 = row[i + 1..].iter().zip(&x[i + 1..]).map(|(a, x)| a * x).sum();
        x[i] = (b[i] - s) / row[i];
    }
    Some(Array1::from(x))
}

/// A sparse square matrix in compressed rows.
#[derive(Clone, Debug, Default)]
pub struct Csr {
    /// Row start offsets (len n + 1).
    pub row_ptr: Vec<usize>,
    /// Column of each entry.
    pub cols: Vec<usize>,
    /// Value of each entry.
    pub vals: Vec<f64>,
}

impl Csr {
    /// Builds from rows of (column, value) pairs.
    pub fn from_rows(rows: &[Vec<(usize, f64)>]) -> Csr {
        let mut m = Csr {
            row_ptr: vec![0],
            ..Csr::default()
        };
        for r in rows {
            for &(c, v) in r {
                m.cols.push(c);
                m.vals.push(v);
            }
            m.row_ptr.push(m.cols.len());
        }
        m
    }

    fn n(&self) -> usize {
        self.row_ptr.len() - 1
    }

    fn mul(&self, x: &[f64], y: &mut [f64]) {
        for (i, yi) in y.iter_mut().enumerate() {
            *yi = (self.row_ptr[i]..self.row_ptr[i + 1])
                .map(|k| self.vals[k] * x[self.cols[k]])
                .sum();
        }
    }

    fn diag(&self) -> Vec<f64> {
        (0..self.n())
            .map(|i| {
                (self.row_ptr[i]..self.row_ptr[i + 1])
                    .find(|&k| self.cols[k] == i)
                    .map_or(1.0, |k| self.vals[k])
            })
            .collect()
    }
}

/// Solves A x = b with Jacobi-preconditioned BiCGSTAB to relative residual
/// `tol`. `None` if it does not converge.
pub fn bicgstab(a: &Csr, b: &[f64], tol: f64, max_iter: usize) -> Option<Vec<f64>> {
    let n = a.n();
    let dinv: Vec<f64> = a.diag().iter().map(|d| if *d != 0.0 { 1.0 / d } else { 1.0 }).collect();
    let dot = |u: &[f64], v: &[f64]| u.iter().zip(v).map(|(a, b)| a * b).sum::<f64>();
    let norm_b = dot(b, b).sqrt().max(1e-300);
    let mut x = vec![0.0; n];
    let mut r: Vec<f64> = b.to_vec();
    let r0 = r.clone();
    let (mut rho, mut alpha, mut omega) = (1.0, 1.0, 1.0);
    let mut v = vec![0.0; n];
    let mut p = vec![0.0; n];
    let mut y = vec![0.0; n];
    let mut s = vec![0.0; n];
    let mut z = vec![0.0; n];
    let mut t = vec![0.0; n];
    for _ in 0..max_iter {
        let rho_new = dot(&r0, &r);
        if rho_new == 0.0 {
            return None;
        }
        let beta = (rho_new / rho) * (alpha / omega);
        rho = rho_new;
        for i in 0..n {
            p[i] = r[i] + beta * (p[i] - omega * v[i]);
            y[i] = dinv[i] * p[i];
        }
        a.mul(&y, &mut v);
        alpha = rho / dot(&r0, &v);
        for i in 0..n {
            s[i] = r[i] - alpha * v[i];
        }
        if dot(&s, &s).sqrt() / norm_b < tol {
            for i in 0..n {
                x[i] += alpha * y[i];
            }
            return Some(x);
        }
        for i in 0..n {
            z[i] = dinv[i] * s[i];
        }
        a.mul(&z, &mut t);
        let tt = dot(&t, &t);
        omega = if tt > 0.0 { dot(&t, &s) / tt } else { 0.0 };
        for i in 0..n {
            x[i] += alpha * y[i] + omega * z[i];
            r[i] = s[i] - omega * t[i];
        }
        if !x.iter().all(|v| v.is_finite()) {
            return None;
        }
        if dot(&r, &r).sqrt() / norm_b < tol {
            return Some(x);
        }
        if omega == 0.0 {
            return None;
        }
    }
    None
}

/// Inverse of a square matrix (Gauss–Jordan by column solves). `None` if singular.
pub fn invert(a: &Array2<f64>) -> Option<Array2<f64>> {
    let n = a.nrows();
    let mut inv = Array2::zeros((n, n));
    for j in 0..n {
        let mut e = Array1::zeros(n);
        e[j] = 1.0;
        let col = solve_dense(a.clone(), e)?;
        inv.column_mut(j).assign(&col);
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn dense_solve_with_pivoting() {
        let a = array![[0.0, 2.0, 1.0], [1.0, 1.0, 0.0], [3.0, 0.0, 1.0]];
        let x = solve_dense(a.clone(), array![5.0, 3.0, 6.0]).unwrap();
        let back = a.dot(&x);
        for (u, v) in back.iter().zip([5.0, 3.0, 6.0]) {
            assert!((u - v).abs() < 1e-12);
        }
        assert!(solve_dense(array![[1.0, 2.0], [2.0, 4.0]], array![1.0, 2.0]).is_none());
    }

    #[test]
    fn bicgstab_matches_dense_on_a_chain() {
        // I - Q for a lazy random walk with absorption at both ends.
        let n = 50;
        let rows: Vec<Vec<(usize, f64)>> = (0..n)
            .map(|i| {
                let mut r = vec![(i, 1.0 - 0.5)];
                if i > 0 {
                    r.push((i - 1, -0.25));
                }
                if i + 1 < n {
                    r.push((i + 1, -0.25));
                }
                r
            })
            .collect();
        let x = bicgstab(&Csr::from_rows(&rows), &vec![1.0; n], 1e-12, 10_000).unwrap();
        let mut dense = Array2::zeros((n, n));
        for (i, r) in rows.iter().enumerate() {
            for &(j, v) in r {
                dense[[i, j]] = v;
            }
        }
        let y = solve_dense(dense, Array1::from_elem(n, 1.0)).unwrap();
        for i in 0..n {
            assert!((x[i] - y[i]).abs() / y[i] < 1e-9);
        }
    }
}
