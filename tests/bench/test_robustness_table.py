"""bench.robustness's table: one row per training, FGSM and PGD at each size."""

from bench.robustness import markdown


def test_the_table_shows_clean_and_robust_accuracy_and_the_times_of_each_run():
    def run(training, epsilon, pgd_at_2):
        return {
            "adversarial_training": training,
            "adversarial_epsilon": epsilon,
            "accuracy": 0.9,
            "robustness": {
                "epsilons": [0.0, 1.0, 2.0],
                "accuracy": {"fgsm": [0.9, 0.5, 0.4], "pgd": [0.9, 0.3, pgd_at_2]},
                "seconds": 12.0,
            },
            "train_seconds": 300.0,
        }

    table = markdown([run("none", None, 0.0), run("fgsm", 2.0, 0.25)]).splitlines()
    assert table[0] == (
        "| adversarial training | clean accuracy | FGSM / PGD at 1 | FGSM / PGD at 2 | "
        "train time | robustness time |"
    )
    assert table[1] == "|---|---|---|---|---|---|"
    assert table[2] == "| none | 90.0% | 50.0 / 30.0 | 40.0 / 0.0 | 300 s | 12 s |"
    assert table[3] == "| fgsm at 2 | 90.0% | 50.0 / 30.0 | 40.0 / 25.0 | 300 s | 12 s |"
