"""cifar_course: the package behind the cifar-course book.

    import cifar_course as cc
    p = cc.profile()                                   # smoke | quick | full
    (x_train, y_train), (x_test, y_test) = data = cc.load_cifar10()
    train_ds = cc.make_dataset(x_train, y_train, training=True, augment="padcrop")
    model = cc.build_resnet(20)
    history = cc.train_model(model, train_ds, p.epochs)
    report = cc.evaluate_model(model, cc.make_dataset(x_test, y_test))

Each module is one concern; the flow of a chapter runs down the first list, and the names below are
imported in that order. Every function is also reachable through its module (`cc.models.build_resnet`),
and no flat name hides a module.

The flow:
    config        profiles (smoke, quick, full), data choice, seeding; `resolve(profile)`
    splits        `Splits`, what every loader returns, and CIFAR-10's class names
    data          loaders (archive, batches, image folders) and their checks, stratified subsets
    synthetic     the CIFAR-shaped stand-in, pure NumPy, with known object masks
    pipeline      tf.data pipelines, batch augmentation, standardization
    models        every network builder (all in `MODELS`) with its float32 head
    schedules     learning-rate schedule shapes (Keras' own where it has them)
    optim         optimizers: Adam/AdamW/SGD by name, SGD with scaled BatchNorm biases, Muon
    train         `train_model` over `model.fit`, losses, callbacks, precision and strategies
    flagship      the whole fast recipe (after airbench94_muon), top to bottom in one file
    evaluate      metrics, calibration, `predict` and the one batched-inference loop
    plots         figures of data and evaluation
    tables        row dicts -> Markdown tables
    results       recording a chapter's figures; reference records; the results page
Topics, in chapter order:
    regularize    mixup, CutMix, cutout, stochastic depth, L2, the overfitting gap
    troubleshoot  per-step losses, label-sorted data, roughness, per-layer gradient norms
    gradcam       Grad-CAM heatmaps and their localization scores
    robustness    FGSM, PGD, fast adversarial training, background sensitivity
    compress      cost counts, quantization, pruning, TFLite conversion and timing
    runtime       load and run an exported artifact (TFLite, ONNX, SavedModel); no TensorFlow import
    export        SavedModel, TFLite and ONNX files with their preprocessing
    serve         the HTTP inference service (FastAPI on uvicorn) and its demo page
    simclr        contrastive self-supervised pre-training and its evaluation
    distill       knowledge distillation
    federated     federated learning with TensorFlow Federated (imported lazily)
    exercises     the checks learners call on their answers
"""

import os as _os

# Keep TensorFlow's C++ start-up chatter out of notebooks (it would end up in the book).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

# ------------------------------------------------------------------------------------------------
# Serving first: runtime and serve import no TensorFlow, so the serving install (requirements-serve.txt,
# the Docker image), which has none, can import them; there the package is those two modules only.

from importlib.util import find_spec as _find_spec  # noqa: E402

from .runtime import TFLiteModel, load_artifact, read_preprocessing, write_preprocessing  # noqa: E402
from .serve import (  # noqa: E402
    classify, load_predictor, make_app, make_server, running_server, start_server, stop_server,
)

SERVING_ONLY = _find_spec("tensorflow") is None
_SERVING_NAMES = [
    "TFLiteModel", "load_artifact", "read_preprocessing", "write_preprocessing",
    "classify", "load_predictor", "make_app", "make_server", "running_server", "start_server", "stop_server",
    "SERVING_ONLY",
]

if not SERVING_ONLY:
    # ------------------------------------------------------------------------------------------------
    # The flow: profile -> data -> pipeline -> model -> training -> evaluation -> record

    from .config import PROFILES, Profile, data_dir, profile, resolve, seed_everything  # noqa: E402
    from .splits import CLASS_NAMES, Splits  # noqa: E402
    from .data import (  # noqa: E402
        DataError, check_arrays, describe, download_cifar10, load_batches, load_cifar10, load_image_folder,
        load_image_tree, stratified_indices, subset,
    )
    from .synthetic import SHAPE_NAMES, draw_synthetic, make_synthetic  # noqa: E402
    from .pipeline import (  # noqa: E402
        AUGMENTATIONS, channel_stats, make_dataset, make_image_data_generator, measure_parallelism,
        measure_throughput, normalize, pad_crop_flip, random_affine, standardize,
    )
    from .models import (  # noqa: E402
        MODELS, build_baseline_cnn, build_mobilenet_v2, build_regularized_resnet, build_resnet,
        build_separable_cnn, build_small_cnn, inverted_residual_block, layer_table, preact_residual_block,
        residual_block, se_block, separable_bn_relu,
    )
    from .schedules import SCHEDULES, make_schedule, schedule_values  # noqa: E402
    from .optim import (  # noqa: E402
        OPTIMIZERS, Muon, SGDScaledBiases, current_learning_rate, make_optimizer, orthogonalize,
    )
    from .train import (  # noqa: E402
        FULL_PROFILE_TARGETS, Progress, distribution_strategy, make_callbacks, make_loss, outputs_probabilities,
        resnet_recipe, train_model, training_speed, use_mixed_precision,
    )
    from .flagship import (  # noqa: E402
        FLAGSHIP_15_MINUTES, FLAGSHIP_SGD, EpochEval, Lookahead, PartialIdentity, build_flagship,
        flagship_recipe, init_whitening, make_alternating_flip_dataset, predict_tta, train_flagship,
    )
    from .evaluate import (  # noqa: E402
        calibration_bins, class_report, confused_pairs, confusion, evaluate_model, expected_calibration_error,
        predict, predict_outputs, top_k_accuracy, worst_mistakes,
    )
    from .plots import (  # noqa: E402
        plot_augmentations, plot_class_balance, plot_confusion_matrix, plot_history, plot_image_grid,
        plot_mistakes, plot_reliability, plot_schedule,
    )
    from .tables import markdown_table, show_table  # noqa: E402
    from .results import (  # noqa: E402
        REFERENCE_DATA, chapter_summary, compare_with_reference, format_duration, load_results,
        overview_accuracies, promote_results, record, reference, reference_figure, reference_provenance, reference_runtime,
        reference_sweep_time, results_table, save_figure, select_figures, show_reference_figure,
        show_reference_provenance,
    )

    # ------------------------------------------------------------------------------------------------
    # Topic modules, in chapter order

    from .regularize import (  # noqa: E402
        StochasticDepth, cutmix, cutmix_boxes, cutout, l2, mean_and_spread, measure_gap, mixup,
        plot_gap_bars, plot_mixing_examples,
    )
    from .troubleshoot import (  # noqa: E402
        BatchLosses, GradientNormMonitor, gradient_norms, roughness, sort_by_label)
    from .gradcam import (  # noqa: E402
        class_scores, compute_gradcam, find_last_conv_layer, localization_report, localization_scores,
        plot_gradcam,
    )
    from .robustness import (  # noqa: E402
        EPSILON, FastAdversarialModel, RobustnessMonitor, background_sensitivity, fgsm, pgd, robust_accuracy,
    )
    from .compress import (  # noqa: E402
        build_pruned_model, build_qat_model, compare_tflite, count_cost, evaluate_tflite,
        file_sizes, keras_tflite_gap, paired_latency, pruning_callbacks, pruning_steps,
        representative_dataset, sparsity, strip_pruning, time_tflite, to_tflite,
    )
    from .export import (  # noqa: E402
        export_for_serving, export_gap, export_onnx, export_saved_model, export_tflite,
    )
    from .simclr import (  # noqa: E402
        KNNMonitor, SimCLR, build_classifier, build_projection_head, encoder_from, extract_features,
        knn_accuracy, label_fraction, linear_eval, make_views_dataset, npairs_loss, nt_xent_loss,
        simclr_augment,
    )
    from .distill import (  # noqa: E402
        Distiller, compare_with_teacher, distillation_loss, fit_student, logits_model, make_distillation_dataset,
        plot_students,
        soft_targets, teacher_logits,
    )
    from . import federated  # noqa: E402  (used as cc.federated; TFF is imported only when a function needs it)
    from . import exercises  # noqa: E402  (used as cc.exercises.check_...)

__all__ = _SERVING_NAMES if SERVING_ONLY else _SERVING_NAMES + [
    # config, splits, data, synthetic
    "PROFILES", "Profile", "data_dir", "profile", "resolve", "seed_everything",
    "CLASS_NAMES", "Splits",
    "DataError", "check_arrays", "describe", "download_cifar10", "load_batches", "load_cifar10",
    "load_image_folder", "load_image_tree", "stratified_indices", "subset",
    "SHAPE_NAMES", "draw_synthetic", "make_synthetic",
    # pipeline, models
    "AUGMENTATIONS", "channel_stats", "make_dataset",
    "make_image_data_generator", "measure_parallelism", "measure_throughput", "normalize", "pad_crop_flip", "random_affine",
    "standardize",
    "MODELS", "build_baseline_cnn", "build_mobilenet_v2",
    "build_regularized_resnet", "build_resnet", "build_separable_cnn", "build_small_cnn",
    "inverted_residual_block", "layer_table", "preact_residual_block",
    "residual_block", "se_block", "separable_bn_relu",
    # schedules, optim, train, flagship
    "SCHEDULES", "make_schedule", "schedule_values",
    "OPTIMIZERS", "Muon", "SGDScaledBiases", "current_learning_rate", "make_optimizer", "orthogonalize",
    "FULL_PROFILE_TARGETS", "Progress", "distribution_strategy", "make_callbacks", "make_loss",
    "outputs_probabilities", "resnet_recipe", "train_model", "training_speed", "use_mixed_precision",
    "FLAGSHIP_15_MINUTES", "FLAGSHIP_SGD", "EpochEval", "Lookahead", "PartialIdentity", "build_flagship",
    "flagship_recipe", "init_whitening", "make_alternating_flip_dataset", "predict_tta", "train_flagship",
    # evaluate, plots, tables, results
    "calibration_bins", "class_report", "confused_pairs", "confusion", "evaluate_model",
    "expected_calibration_error", "predict", "predict_outputs", "top_k_accuracy", "worst_mistakes",
    "plot_augmentations", "plot_class_balance", "plot_confusion_matrix", "plot_history", "plot_image_grid",
    "plot_mistakes", "plot_reliability", "plot_schedule",
    "markdown_table", "show_table",
    "REFERENCE_DATA", "chapter_summary", "compare_with_reference", "load_results", "promote_results",
    "record", "reference", "reference_figure", "reference_provenance", "reference_runtime",
    "reference_sweep_time",
    "results_table", "save_figure", "select_figures", "show_reference_figure", "format_duration",
    "overview_accuracies",
    "show_reference_provenance",
    # topic modules
    "StochasticDepth", "cutmix", "cutmix_boxes", "cutout", "l2", "mean_and_spread", "measure_gap", "mixup",
    "plot_gap_bars", "plot_mixing_examples",
    "BatchLosses", "GradientNormMonitor", "gradient_norms", "roughness", "sort_by_label",
    "class_scores", "compute_gradcam", "find_last_conv_layer", "localization_report",
    "localization_scores", "plot_gradcam",
    "EPSILON", "FastAdversarialModel", "RobustnessMonitor", "background_sensitivity", "fgsm", "pgd",
    "robust_accuracy",
    "build_pruned_model", "build_qat_model", "compare_tflite", "count_cost",
    "evaluate_tflite", "file_sizes", "keras_tflite_gap", "pruning_callbacks", "pruning_steps",
    "representative_dataset", "sparsity", "strip_pruning", "time_tflite", "to_tflite", "paired_latency",
    "export_for_serving", "export_gap", "export_onnx", "export_saved_model", "export_tflite",
    "KNNMonitor", "SimCLR", "build_classifier", "build_projection_head", "encoder_from",
    "extract_features", "knn_accuracy", "label_fraction", "linear_eval", "make_views_dataset",
    "npairs_loss", "nt_xent_loss", "simclr_augment",
    "Distiller", "compare_with_teacher", "distillation_loss", "fit_student", "logits_model", "plot_students",
    "make_distillation_dataset", "soft_targets",
    "teacher_logits",
    "federated", "exercises",
]
