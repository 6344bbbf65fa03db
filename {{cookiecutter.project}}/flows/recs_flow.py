"""The post-modern stack, end to end, as one Metaflow flow.

Steps:
    1. start     check the configuration and that the warehouse is reachable
    2. ingest    generate synthetic events (or keep what is loaded) and append them to the raw log
    3. transform dbt build: staging and marts models plus their tests (card: the dbt DAG)
    4. quality   great-expectations suite on the training sessions (card: results)
    5. dataset   read the session table and split it by time (older train, newest test)
    6. tune      foreach over the hyper-parameter grid: train on the newest `tune_max_sessions`
                 sessions before the validation days for at most `tune_epochs` epochs, score
                 MRR@20 on the newest training days (never the test split)
    7. choose    join: keep the configuration with the best validation MRR@20 (card: the grid and
                 each configuration's validation curves)
    8. train     Keras LSTM, the chosen configuration, on the whole train split, until early
                 stopping or `sample_budget` (card: curves)
    9. evaluate  RecList suite: the LSTM, three baselines (V-SKNN tuned on the validation days)
                 and the deployed champion, re-scored on the same test split under two protocols
                 (all prefixes, which the gate judges, and one random cut per session, the data
                 challenge's); behavioural tests (card)
   10. gate      thresholds, baselines, champion and behavioural tests decide on deployment (card)
   11. deploy    start the SageMaker-contract endpoint and send it a smoke request (card)
   12. end       summary (card: verdict, deployment, LSTM vs the best baseline, commands)

Each step calls the module named after its part of the stack; the logic lives there.
With BATCH=true the model steps (@compute.heavy) run on AWS Batch: see pipeline/compute.py.
"""

from metaflow import FlowSpec, Parameter, card, current, step
from metaflow._vendor import click  # Metaflow's own click: it parses the parameters

from {{ cookiecutter.project }}.modeling.params import (
    DEFAULT_GRID_JSON,
    TUNE_EPOCHS,
    TUNE_MAX_SESSIONS,
    VALIDATION_DAYS,
    TrainParams,
)
from {{ cookiecutter.project }}.pipeline import compute
from {{ cookiecutter.project }}.settings import SettingsError, get_settings, with_overrides

SETTINGS = get_settings()
_P = TrainParams()  # the model's defaults


class _Setting(click.ParamType):
    """The type of a parameter that stands for a setting: a value is checked by the setting's rules
    as the command line is parsed, so a bad one stops the run before it starts, in one line."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.base = click.INT if isinstance(getattr(SETTINGS, field), int) else click.STRING
        self.name = self.base.name

    def convert(self, value, param, ctx):
        value = self.base.convert(value, param, ctx)
        try:
            with_overrides(SETTINGS, **{self.field: value})
        except SettingsError as error:
            self.fail(str(error), param, ctx)
        return value


def _setting(name: str, help: str) -> Parameter:
    """A parameter that overrides the setting of the same name; its default is the setting's."""
    default = getattr(SETTINGS, name)
    default = default if isinstance(default, int) else str(default)
    return Parameter(name, help=help, default=default, type=_Setting(name))


class RecsFlow(FlowSpec):
    """Events > warehouse > dbt > quality > LSTM > RecList > gate > endpoint."""

    source = Parameter(
        "source",
        help="'synthetic' generates events, 'coveo' loads COVEO_DIR/browsing_train.csv, "
        "'landing' the files under EVENTS_URI not loaded yet, "
        "'warehouse' uses what is loaded already",
        default="synthetic",
    )
    n_sessions = _setting("n_sessions", help="Synthetic sessions")
    n_products = _setting("n_products", help="Synthetic catalogue size")
    seed = _setting("seed", help="Seed of the generator and the model")
    start_date = _setting("start_date", help="First day of events (YYYY-MM-DD)")
    days = _setting("days", help="Days of events")
    test_days = _setting("test_days", help="Newest days held out as test")
    epochs = Parameter(
        "epochs", help="Most epochs (early stopping may stop sooner)", default=_P.epochs
    )
    batch_size = Parameter("batch_size", help="Training batch size", default=_P.batch_size)
    architecture = Parameter(
        "architecture",
        help="Network: 'lstm' or 'sasrec' (a causal transformer); tune_grid may try both",
        default=_P.architecture,
    )
    embedding_dim = Parameter("embedding_dim", help="SKU embedding size", default=_P.embedding_dim)
    lstm_units = Parameter("lstm_units", help="LSTM units", default=_P.lstm_units)
    max_length = Parameter(
        "max_length", help="Most recent SKUs the model reads", default=_P.max_length
    )
    learning_rate = Parameter("learning_rate", help="Adam learning rate", default=_P.learning_rate)
    full_softmax_max_skus = Parameter(
        "full_softmax_max_skus",
        help="Largest catalogue trained with the full softmax; above it a sampled softmax",
        default=_P.full_softmax_max_skus,
    )
    sampled_negatives = Parameter(
        "sampled_negatives",
        help="Sampled softmax: SKUs drawn per batch as negatives",
        default=_P.sampled_negatives,
    )
    sample_budget = Parameter(
        "sample_budget",
        help="Most training samples seen, all epochs together (fewer epochs on large data; "
        "0 = no limit)",
        default=_P.sample_budget,
    )
    tune_grid = Parameter(
        "tune_grid",
        help="JSON list of hyper-parameter overrides the tune step tries, e.g. "
        "'[{}, {\"lstm_units\": 128}]' ({} = the parameters above)",
        default=DEFAULT_GRID_JSON,
    )
    tune_days = Parameter(
        "tune_days",
        help="Newest training days that score each tuned configuration",
        default=VALIDATION_DAYS,
    )
    tune_max_sessions = Parameter(
        "tune_max_sessions",
        help="Each tuned configuration trains on the newest this many sessions before the "
        "validation days (0 = all)",
        default=TUNE_MAX_SESSIONS,
    )
    tune_epochs = Parameter(
        "tune_epochs",
        help="Most epochs of each tuned configuration (0 = the epochs parameter)",
        default=TUNE_EPOCHS,
    )
    deploy_enabled = Parameter(
        "deploy_enabled", help="Deploy the model if it passes the gate", default=True
    )

    @card(type="blank")
    @step
    def start(self):
        """Check the configuration and the warehouse connection."""
        from {{ cookiecutter.project }} import warehouse
        from {{ cookiecutter.project }}.pipeline import cards

        self.settings = cards.public_settings(SETTINGS)  # every secret field left out
        warehouse.check_warehouse(SETTINGS)
        parameters = {name: getattr(self, name) for name in current.parameter_names}
        current.card.extend(cards.config_card(self.settings, current, parameters))
        self.next(self.ingest)

    @card(type="blank")
    @step
    def ingest(self):
        """Generate synthetic events or convert the Coveo files; append them to the raw log."""
        from {{ cookiecutter.project }}.ingest.load import ingest
        from {{ cookiecutter.project }}.pipeline import cards

        self.ingest_result = ingest(
            SETTINGS,
            source=self.source,
            n_sessions=self.n_sessions,
            n_products=self.n_products,
            seed=self.seed,
            start_date=self.start_date,
            days=self.days,
        )
        current.card.extend(cards.ingest_card(self.ingest_result))
        self.next(self.transform)

    @card(type="blank")
    @step
    def transform(self):
        """Build the dbt models and run their tests."""
        from {{ cookiecutter.project }} import transform
        from {{ cookiecutter.project }}.pipeline import cards

        self.dbt_result = transform.build(SETTINGS, output_dir=cards.step_dir(current))
        current.card.extend(cards.dbt_card(self.dbt_result))
        transform.raise_on_failure(self.dbt_result)
        self.next(self.quality)

    @card(type="blank")
    @step
    def quality(self):
        """Check the training sessions against the expectation suite."""
        from {{ cookiecutter.project }} import quality, warehouse
        from {{ cookiecutter.project }}.pipeline import cards

        sessions = warehouse.read_warehouse_sessions(SETTINGS)
        thresholds = quality.QualityThresholds.from_settings(SETTINGS)
        self.quality_report = quality.check_sessions(sessions, thresholds)
        print(quality.format_report(self.quality_report))
        current.card.extend(cards.quality_card(self.quality_report, sessions, thresholds))
        quality.assert_quality(self.quality_report)
        self.next(self.dataset)

    @card(type="blank")
    @step
    def dataset(self):
        """Read the session table and split it by time."""
        from {{ cookiecutter.project }} import dataset
        from {{ cookiecutter.project }}.modeling import tuning
        from {{ cookiecutter.project }}.pipeline import cards

        self.split = dataset.load_split(SETTINGS, test_days=self.test_days)
        current.card.extend(cards.dataset_card(self.split, self.tune_days))
        self.grid = tuning.parse_grid(self.tune_grid)
        self.trial_budget = tuning.TrialBudget(self.tune_max_sessions, self.tune_epochs)
        self.next(self.tune, foreach="grid")

    def _base_params(self):
        """The model's parameters as this run's Parameters set them (before tuning)."""
        return TrainParams(
            architecture=self.architecture,
            epochs=self.epochs,
            batch_size=self.batch_size,
            embedding_dim=self.embedding_dim,
            lstm_units=self.lstm_units,
            max_length=self.max_length,
            learning_rate=self.learning_rate,
            full_softmax_max_skus=self.full_softmax_max_skus,
            sampled_negatives=self.sampled_negatives,
            sample_budget=self.sample_budget,
            seed=self.seed,
        )

    @compute.heavy(gpu=True)
    @step
    def tune(self):
        """Train one grid configuration on the older training days; score the newest ones."""
        compute.select_training_backend(SETTINGS)  # before Keras loads: JAX on GPUs
        from {{ cookiecutter.project }}.modeling import tuning
        from {{ cookiecutter.project }}.modeling.lstm import EpochPrinter

        budget = self.trial_budget
        epochs = budget.params(tuning.params_for(self._base_params(), self.input)).epochs
        print(f"Tuning {self.input or 'defaults'} on {budget.text}")
        self.trial = tuning.run_trial(
            self.split.train,
            self._base_params(),
            self.input,
            days=self.tune_days,
            max_examples=SETTINGS.eval_max_examples,
            seed=self.seed,
            progress=EpochPrinter(f"tune {self.input or 'defaults'}", epochs),
            budget=budget,
        )
        self.next(self.choose)

    @card(type="blank")
    @step
    def choose(self, inputs):
        """Keep the configuration with the best validation MRR@20."""
        from {{ cookiecutter.project }}.modeling import tuning
        from {{ cookiecutter.project }}.pipeline import cards

        self.trials = [branch.trial for branch in inputs]
        self.best = tuning.choose_best(self.trials)
        self.merge_artifacts(inputs, exclude=["trial"])
        current.card.extend(cards.tuning_card(self.trials, self.best))
        self.next(self.train)

    @card(type="blank")
    @compute.heavy(gpu=True)
    @step
    def train(self):
        """Train the chosen configuration on the whole train split; export model.tar.gz."""
        backend = compute.select_training_backend(SETTINGS)  # before Keras loads: JAX on GPUs
        from {{ cookiecutter.project }} import tracking
        from {{ cookiecutter.project }}.modeling import lstm, tuning
        from {{ cookiecutter.project }}.pipeline import cards

        params = tuning.params_for(self._base_params(), self.best.overrides)
        print(f"Chosen: {self.best.label} (validation MRR@20 {self.best.mrr:.4f}); {params}")
        print(f"Training on Keras' {backend} backend; the serving export runs on TensorFlow")
        tracker = tracking.from_settings(SETTINGS, f"{current.flow_name}-{current.run_id}")
        self.training = lstm.train_and_export(
            self.split.train,
            params,
            cards.step_dir(current),
            tracker,
            progress=lstm.EpochPrinter("train", params.epochs),
        )
        print(lstm.early_stop_text(self.training.history, params, self.training.n_samples))
        current.card.extend(cards.training_card(self.training))
        self.next(self.evaluate)

    @card(type="blank")
    @compute.heavy()
    @step
    def evaluate(self):
        """RecList suite on the LSTM, baselines and champion, under both test protocols."""
        from {{ cookiecutter.project }} import tracking
        from {{ cookiecutter.project }}.evaluation import behaviour, report
        from {{ cookiecutter.project }}.modeling import archive, baselines, ceiling
        from {{ cookiecutter.project }}.pipeline import cards, plots
        from {{ cookiecutter.project }}.release.champion import load_champion

        lstm = archive.load_archive(self.training.model_archive, cards.step_dir(current))
        best = ceiling.ceiling_for(self.ingest_result.generator_model, self.split.test["skus"])
        self.champion, champion = load_champion(SETTINGS, cards.step_dir(current) / "champion")
        fitted = baselines.fit_baselines(self.split.train, validation_days=self.tune_days)
        self.knn_trials = fitted[-1].tuning  # V-SKNN's validation trials, for its card
        self.evaluation = report.evaluate_split(
            [lstm, *fitted, *filter(None, (champion, best))],
            self.split,
            max_examples=SETTINGS.eval_max_examples,
            seed=self.seed,
            out_dir=cards.step_dir(current) / "reclist",
            behaviour=behaviour.BehaviourConfig(
                sample_size=SETTINGS.eval_behaviour_sample,
                short_prefix_max=SETTINGS.eval_short_prefix_max,
                seed=self.seed,
            ),
        )
        tracker = tracking.from_settings(SETTINGS, f"{current.flow_name}-{current.run_id}-eval")
        self.evaluation_tracking = report.log_report(
            tracker, self.evaluation, plots.plot_comparison(self.evaluation)
        )
        print(cards.evaluation_text(self.evaluation))
        current.card.extend(cards.evaluation_card(self.evaluation))
        current.card.extend(cards.knn_card(self.knn_trials))
        self.next(self.gate)

    @card(type="blank")
    @step
    def gate(self):
        """Decide whether the model may be deployed: thresholds, baselines, champion, behaviour."""
        from {{ cookiecutter.project }} import deploy
        from {{ cookiecutter.project }}.pipeline import cards
        from {{ cookiecutter.project }}.release import gate

        # The champion's record, held against what the endpoint serves now (DescribeEndpoint).
        champion = deploy.check_champion(self.champion, SETTINGS)
        self.gate_decision = gate.decide(
            self.evaluation, gate.thresholds_from_settings(SETTINGS), champion=champion
        )
        print(gate.format_decision(self.gate_decision))
        current.card.extend(cards.gate_card(self.gate_decision))
        self.next(self.deploy)

    @card(type="blank")
    @step
    def deploy(self):
        """Deploy the model to DEPLOY_TARGET if it passed the gate, smoke-test it, record it."""
        from {{ cookiecutter.project }} import deploy
        from {{ cookiecutter.project }}.pipeline import cards

        self.deployment = deploy.deploy_if_passed(
            self.gate_decision,
            self.training.model_archive,
            smoke_sessions=self.split.test["skus"].head(3).tolist(),
            enabled=self.deploy_enabled,
            evaluation=self.evaluation,  # the champion record keeps the candidate's metrics
            run_id=current.run_id,
            flow=current.flow_name,
        )
        current.card.extend(cards.deploy_card(self.deployment))
        self.next(self.end)

    @card(type="blank")
    @step
    def end(self):
        """Say where the results are (card: the run in one page)."""
        from {{ cookiecutter.project }}.pipeline import cards

        print(cards.run_summary(self.gate_decision, self.deployment, current))
        current.card.extend(
            cards.end_card(self.gate_decision, self.deployment, self.evaluation, current)
        )


if __name__ == "__main__":
    compute.preflight()  # seconds, where Metaflow would retry a wrong S3 setting for minutes
    RecsFlow()
