//! The same inputs give the same bits whatever the number of threads (issue 18, item 3): forward
//! sensitivities split their directions into blocks by the rayon pool's size, and several user threads
//! may differentiate one shared problem at once.

use odesens_models::{Brusselator2D, DoublePendulum};
use odesens_sensitivity::{
    Checkpointing, Directions, ForwardSettings, SensitivityAlgorithm, SquaredNormAt,
    forward_sensitivities, gradient,
};
use odesens_solver::{LinearSolverKind, Method, SolverOptions};

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
        .install(f)
}

#[test]
fn forward_sensitivities_and_gradients_are_bitwise_equal_for_1_2_and_8_threads() {
    let problem = DoublePendulum::standard_problem(10.0).unwrap();
    let options = SolverOptions::default().tol(1e-8);
    let objective = SquaredNormAt::new(problem.t_end());
    let run = || {
        let sens = forward_sensitivities(
            &problem,
            &options,
            &Directions::All,
            &[2.0, problem.t_end()],
            ForwardSettings::default(),
        )
        .unwrap();
        let forward = gradient(
            &problem,
            &options,
            &objective,
            &SensitivityAlgorithm::Forward,
        )
        .unwrap();
        let adjoint = gradient(
            &problem,
            &options,
            &objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::Binomial { snapshots: 4 }),
        )
        .unwrap();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        (
            bits(sens.sensitivities.as_slice().unwrap()),
            bits(&forward.to_vec()),
            bits(&adjoint.to_vec()),
        )
    };
    let one = in_pool(1, run);
    for threads in [2, 8] {
        let many = in_pool(threads, run);
        assert!(one == many, "{threads} threads differ from 1");
    }
}

#[test]
fn concurrent_users_of_one_problem_get_the_same_bits() {
    // Several std threads at once on a shared problem: the pendulum's adjoint (reverse-mode tapes are
    // per thread) and an implicit sparse one (Kvaerno5 on the Brusselator, GMRES stage solves).
    let pendulum = DoublePendulum::standard_problem(10.0).unwrap();
    let bruss = Brusselator2D::problem(8).unwrap();
    let explicit = SolverOptions::default().tol(1e-8);
    let implicit = SolverOptions::default()
        .method(Method::Kvaerno5)
        .rtol(1e-7)
        .atol(1e-5)
        .linear_solver(LinearSolverKind::Sparse);
    let adjoint = SensitivityAlgorithm::adjoint(Checkpointing::KeepAll);
    let solo = (
        gradient(&pendulum, &explicit, &SquaredNormAt::new(10.0), &adjoint)
            .unwrap()
            .to_vec(),
        gradient(&bruss, &implicit, &SquaredNormAt::new(1.0), &adjoint)
            .unwrap()
            .to_vec(),
    );
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (
                        gradient(&pendulum, &explicit, &SquaredNormAt::new(10.0), &adjoint)
                            .unwrap()
                            .to_vec(),
                        gradient(&bruss, &implicit, &SquaredNormAt::new(1.0), &adjoint)
                            .unwrap()
                            .to_vec(),
                    )
                })
            })
            .collect();
        for h in handles {
            let got = h.join().expect("no panic");
            assert!(
                got.0
                    .iter()
                    .zip(&solo.0)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
            assert!(
                got.1
                    .iter()
                    .zip(&solo.1)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }
    });
}
