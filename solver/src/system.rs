//! The model interface users implement.

use ndarray::{ArrayView1, ArrayViewMut1};
use num_dual::DualNum;

use crate::event_spec::{Direction, EventAction, EventSpec};
use crate::linalg::SparsityPattern;

/// Scalar types a right-hand side is evaluated with: `f64` on the hot path, dual numbers of `num-dual`
/// (`Dual64`, the sensitivity crate's `Lanes<N>`, hyper-duals, ...) when derivatives are needed.
///
/// Blanket-implemented; users only write it as a bound.
pub trait Scalar: DualNum<Primitive = f64> + Copy {}

impl<T: DualNum<Primitive = f64> + Copy> Scalar for T {}

/// A system of ordinary differential equations du/dt = f(t, u, p).
///
/// Write the right-hand side once, generic over the scalar type `S`: the solver calls it with `S = f64`,
/// the sensitivity code with dual numbers, so that Jacobian–vector products are exact (forward-mode
/// automatic differentiation) without any hand-written derivative.
///
/// # Requirements
/// - `rhs` must write every component of `du` (the buffer holds stale values from an earlier call).
/// - `rhs` must be a pure function of `(t, u, p)`: the step sequence is replayed for adjoints.
/// - Only operations of [`num_dual::DualNum`] (arithmetic, `sin`, `exp`, `powi`, `sqrt`, ...) may be
///   applied to values of type `S`; branching on `u.re()` is allowed.
///
/// # Example
/// ```
/// use ndarray::{ArrayView1, ArrayViewMut1};
/// use odesens_solver::{OdeSystem, Scalar};
///
/// /// Logistic growth du/dt = r u (1 − u/K), p = [r, K].
/// struct Logistic;
///
/// impl OdeSystem for Logistic {
///     fn n_states(&self) -> usize { 1 }
///     fn n_params(&self) -> usize { 2 }
///     fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
///         du[0] = p[0] * u[0] * (S::one() - u[0] / p[1]);
///     }
/// }
/// # let _ = Logistic;
/// ```
pub trait OdeSystem: Sync {
    /// Number of state components n (the length of u).
    fn n_states(&self) -> usize;

    /// Number of parameters (the length of p); may be 0.
    fn n_params(&self) -> usize;

    /// Evaluates du = f(t, u, p) into `du` (length n).
    fn rhs<S: Scalar>(&self, t: S, u: ArrayView1<S>, p: ArrayView1<S>, du: ArrayViewMut1<S>);

    /// Optional hand-written Jacobian–vector product: writes f_u(t, u, p)·v + f_p(t, u, p)·w into `out`
    /// and returns `true`. The default returns `false`, and odesens differentiates `rhs` by forward-mode
    /// AD instead (exact, about 1–2 rhs evaluations). Override only where a hand-written product is
    /// cheaper; it must be exact, or gradients will be wrong.
    fn jvp(&self, t: f64, u: &[f64], p: &[f64], v: &[f64], w: &[f64], out: &mut [f64]) -> bool {
        let _ = (t, u, p, v, w, out);
        false
    }

    /// Optional hand-written vector–Jacobian product: writes λᵀ f_u(t, u, p) into `u_bar` and
    /// λᵀ f_p(t, u, p) into `p_bar` (both overwritten) and returns `true`. The default returns `false`,
    /// and odesens forms the Jacobian [f_u f_p] by forward-mode AD in chunks of dual numbers instead
    /// (cost grows with n + number of parameters). Adjoints call this once per stage of every step: a
    /// hand-written vjp pays off for larger systems.
    fn vjp(
        &self,
        t: f64,
        u: &[f64],
        p: &[f64],
        lambda: &[f64],
        u_bar: &mut [f64],
        p_bar: &mut [f64],
    ) -> bool {
        let _ = (t, u, p, lambda, u_bar, p_bar);
        false
    }

    /// Optional hand-written Jacobian ∂f/∂u(t, u, p): writes it column-major into `jac` (n × n, entry
    /// (i, j) at i + n·j) and returns `true`. The default returns `false`, and implicit methods form the
    /// Jacobian by forward-mode AD (n dual passes, or one per colour on the sparse path, where
    /// [`OdeSystem::sparse_jacobian`] is used instead). It must be exact for Newton to converge well;
    /// derivatives of the solution never use it.
    fn jacobian(&self, t: f64, u: &[f64], p: &[f64], jac: &mut [f64]) -> bool {
        let _ = (t, u, p, jac);
        false
    }

    /// Optional hand-written sparse Jacobian ∂f/∂u: writes the values of its entries on `pattern` (the
    /// pattern the solver factors with: [`OdeSystem::jacobian_sparsity`] plus the diagonal, in
    /// compressed sparse columns, so entry k of column j is row `pattern.col_rows(j)[k]` at position
    /// `pattern.col_range(j).start + k`) into `values` and returns `true`. Entries of the pattern that
    /// f_u does not have get 0. The default returns `false`, and the sparse path forms the values by one
    /// forward-mode pass per colour of a column colouring. Like [`OdeSystem::jacobian`] it must be exact
    /// for Newton to converge well; derivatives of the solution never use it.
    fn sparse_jacobian(
        &self,
        t: f64,
        u: &[f64],
        p: &[f64],
        pattern: &SparsityPattern,
        values: &mut [f64],
    ) -> bool {
        let _ = (t, u, p, pattern, values);
        false
    }

    /// Optional sparsity pattern of the Jacobian ∂f/∂u: the (row, column) pairs that may be nonzero.
    /// Implicit methods then factor a sparse iteration matrix and form the Jacobian with one
    /// forward-mode pass per colour of a column colouring. The default `None` lets the solver detect
    /// the pattern by AD at two perturbed states (once per problem) when it wants a sparse path
    /// ([`crate::LinearSolverKind`]); declare it when an entry could vanish at both.
    fn jacobian_sparsity(&self) -> Option<Vec<(usize, usize)>> {
        None
    }

    /// Optional preconditioner of the GMRES path ([`crate::LinearSolverKind::Gmres`] with
    /// [`crate::krylov::PreconditionerKind::Model`]): a fresh one for each solve (called once at
    /// set-up), for example a block or physics-based approximation of I − cJ. The default `None`
    /// makes that choice an error.
    fn preconditioner(&self) -> Option<Box<dyn crate::krylov::Preconditioner>> {
        None
    }

    /// Number of events (default 0): moments where the model changes, located by the solver on each
    /// step's continuous extension ([`crate::events`]). Event k is described by
    /// [`OdeSystem::event_spec`], [`OdeSystem::event_condition`] and [`OdeSystem::event_jump`].
    fn n_events(&self) -> usize {
        0
    }

    /// The trigger and action of event k < [`OdeSystem::n_events`] (asked once per solve). Default: a
    /// zero crossing of its condition in either direction that stops the integration.
    fn event_spec(&self, k: usize) -> EventSpec {
        let _ = k;
        EventSpec::crossing(Direction::Either, EventAction::Stop)
    }

    /// The condition g_k(t, u, p) of a crossing event: it fires where g_k crosses zero in its
    /// direction. Generic over the scalar like [`OdeSystem::rhs`], so that the event time's derivatives
    /// come by AD. Default 0 (never fires).
    fn event_condition<S: Scalar>(&self, k: usize, t: S, u: ArrayView1<S>, p: ArrayView1<S>) -> S {
        let _ = (k, t, u, p);
        S::zero()
    }

    /// The jump u⁺ = h_k(t, u⁻, p) of an event with [`EventAction::Jump`]: `u_new` holds a copy of u⁻
    /// on entry; write the components that change. Generic over the scalar like the right-hand side.
    /// Default: no change.
    fn event_jump<S: Scalar>(
        &self,
        k: usize,
        t: S,
        u: ArrayView1<S>,
        p: ArrayView1<S>,
        u_new: ArrayViewMut1<S>,
    ) {
        let _ = (k, t, u, p, u_new);
    }

    /// Called after event k fired (its jump applied): may arm or disarm events for the rest of the
    /// solve (`armed[j]`). Default: no change.
    fn event_fired(&self, k: usize, armed: &mut [bool]) {
        let _ = (k, armed);
    }
}

impl<T: OdeSystem + ?Sized> OdeSystem for &T {
    fn n_states(&self) -> usize {
        (**self).n_states()
    }
    fn n_params(&self) -> usize {
        (**self).n_params()
    }
    fn rhs<S: Scalar>(&self, t: S, u: ArrayView1<S>, p: ArrayView1<S>, du: ArrayViewMut1<S>) {
        (**self).rhs(t, u, p, du)
    }
    fn jvp(&self, t: f64, u: &[f64], p: &[f64], v: &[f64], w: &[f64], out: &mut [f64]) -> bool {
        (**self).jvp(t, u, p, v, w, out)
    }
    fn vjp(
        &self,
        t: f64,
        u: &[f64],
        p: &[f64],
        lambda: &[f64],
        u_bar: &mut [f64],
        p_bar: &mut [f64],
    ) -> bool {
        (**self).vjp(t, u, p, lambda, u_bar, p_bar)
    }
    fn jacobian(&self, t: f64, u: &[f64], p: &[f64], jac: &mut [f64]) -> bool {
        (**self).jacobian(t, u, p, jac)
    }
    fn sparse_jacobian(
        &self,
        t: f64,
        u: &[f64],
        p: &[f64],
        pattern: &SparsityPattern,
        values: &mut [f64],
    ) -> bool {
        (**self).sparse_jacobian(t, u, p, pattern, values)
    }
    fn jacobian_sparsity(&self) -> Option<Vec<(usize, usize)>> {
        (**self).jacobian_sparsity()
    }
    fn preconditioner(&self) -> Option<Box<dyn crate::krylov::Preconditioner>> {
        (**self).preconditioner()
    }
    fn n_events(&self) -> usize {
        (**self).n_events()
    }
    fn event_spec(&self, k: usize) -> EventSpec {
        (**self).event_spec(k)
    }
    fn event_condition<S: Scalar>(&self, k: usize, t: S, u: ArrayView1<S>, p: ArrayView1<S>) -> S {
        (**self).event_condition(k, t, u, p)
    }
    fn event_jump<S: Scalar>(
        &self,
        k: usize,
        t: S,
        u: ArrayView1<S>,
        p: ArrayView1<S>,
        u_new: ArrayViewMut1<S>,
    ) {
        (**self).event_jump(k, t, u, p, u_new)
    }
    fn event_fired(&self, k: usize, armed: &mut [bool]) {
        (**self).event_fired(k, armed)
    }
}
