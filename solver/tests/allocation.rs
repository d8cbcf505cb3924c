//! A counting global allocator proves that the step loop allocates nothing after set-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use odesens_models::{DoublePendulum, Lorenz};
use odesens_solver::*;

struct Counting;

thread_local! {
    /// Allocations made by this thread (the test harness runs tests on parallel threads).
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn bump() {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// Runs a solve step by step and returns (steps taken, allocations during the step loop).
fn count<M: OdeSystem>(problem: &OdeProblem<M>, options: &SolverOptions) -> (usize, usize) {
    let mut integrator = Integrator::new(problem, options).unwrap();
    let before = allocations();
    let mut steps = 0;
    while !integrator.is_finished() {
        integrator.step().unwrap();
        steps += 1;
    }
    (steps, allocations() - before)
}

#[test]
fn step_loop_allocates_nothing() {
    let pendulum = DoublePendulum::standard_problem(10.0).unwrap();
    let lorenz = OdeProblem::new(
        Lorenz,
        vec![1.0, 0.0, 0.0],
        Lorenz::classic_params(),
        (0.0, 5.0),
    )
    .unwrap();
    let save_at: Vec<f64> = (0..=100).map(|i| 0.05 * f64::from(i)).collect();
    for method in Method::ALL {
        for options in [
            SolverOptions::default()
                .method(method)
                .tol(1e-8)
                .save_end_only(),
            SolverOptions::default()
                .method(method)
                .tol(1e-8)
                .save_at(save_at.clone())
                .tstops(vec![1.0, 2.5]),
            SolverOptions::default()
                .method(method)
                .fixed_step(0.01)
                .save_at(save_at.clone()),
        ] {
            let (steps, n_alloc) = count(&pendulum, &options);
            assert!(steps > 100);
            assert_eq!(
                n_alloc, 0,
                "{method}: {n_alloc} allocations in {steps} steps (double pendulum)"
            );
            let (steps, n_alloc) = count(&lorenz, &options);
            assert_eq!(
                n_alloc, 0,
                "{method}: {n_alloc} allocations in {steps} steps (Lorenz)"
            );
        }
    }
}

#[test]
fn the_counter_counts() {
    // The allocator really is active: a Vec allocates.
    let before = allocations();
    let v = std::hint::black_box(vec![1.0f64; 16]);
    assert!(allocations() > before);
    drop(v);
}

#[test]
fn implicit_solves_allocate_only_at_set_up() {
    use odesens_models::Robertson;
    for method in Method::IMPLICIT.into_iter().chain(Method::MULTISTEP) {
        // The whole solve with output at the end only: the count must not depend on the number of steps.
        let count_solve = |t_end: f64| {
            let problem = Robertson::problem(t_end).unwrap();
            let options = SolverOptions::default()
                .method(method)
                .rtol(1e-6)
                .atol(1e-10)
                .save_end_only();
            let before = allocations();
            let sol = solve(&problem, &options).unwrap();
            (sol.stats.accepted_steps, allocations() - before)
        };
        let (short_steps, short) = count_solve(1.0);
        let (long_steps, long) = count_solve(1e6);
        println!(
            "{} Robertson: {short_steps} steps → {short} allocations, {long_steps} steps → {long}",
            method.name()
        );
        assert!(long_steps > 3 * short_steps, "{}", method.name());
        assert_eq!(
            short,
            long,
            "{}: the implicit step loop allocates",
            method.name()
        );
    }
}

#[test]
fn the_gmres_path_allocates_only_at_set_up() {
    use odesens_models::Brusselator2D;
    use odesens_solver::krylov::PreconditionerKind;
    let problem = Brusselator2D::problem(8).unwrap();
    for preconditioner in [
        PreconditionerKind::None,
        PreconditionerKind::Ilu0,
        PreconditionerKind::BlockJacobi { block: 8 },
        PreconditionerKind::LaggedLu,
    ] {
        let mut options = SolverOptions::default()
            .method(Method::Bdf)
            .rtol(1e-7)
            .atol(1e-9)
            .save_end_only();
        options.implicit.linear_solver = LinearSolverKind::Gmres {
            restart: 20,
            preconditioner,
        };
        // Step by step after set-up: nothing allocates, preconditioner set-ups and GMRES included.
        let mut it = BdfIntegrator::new(&problem, &options).unwrap();
        let before = allocations();
        let mut steps = 0;
        // Steps that allocated without setting a preconditioner up.
        let mut outside_setups = 0;
        while !it.is_finished() {
            let (a, f) = (allocations(), it.stats().factorizations);
            it.step_accepted().unwrap();
            steps += 1;
            outside_setups += usize::from(allocations() > a && it.stats().factorizations == f);
        }
        let n_alloc = allocations() - before;
        let s = it.stats();
        println!(
            "{preconditioner:?}: {steps} steps, {} set-ups, {} Krylov jvps → {n_alloc} allocations",
            s.factorizations, s.linear_iterations
        );
        assert!(steps > 50 && s.linear_iterations > steps);
        if preconditioner == PreconditionerKind::LaggedLu {
            // faer's numeric sparse LU (partial pivoting: the fill depends on the values) grows its
            // buffers in some refactorizations: measured 44 allocations in 33 set-ups, none in the
            // steps between them.
            assert!(n_alloc <= 2 * s.factorizations, "{n_alloc}");
            assert_eq!(outside_setups, 0);
        } else {
            assert_eq!(n_alloc, 0, "{preconditioner:?}");
        }
    }
}
