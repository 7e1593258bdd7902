"""cifar_course: the package behind the cifar-course book.

    import cifar_course as cc
    p = cc.profile()                                   # smoke | quick | full
    (x_train, y_train), (x_test, y_test) = data = cc.load_cifar10()
    train_ds = cc.make_dataset(x_train, y_train, training=True, augment="padcrop")

Each module is one concern of the course: config, data, synthetic, pipeline, models, results, exercises.
"""

import os as _os

# Keep TensorFlow's C++ start-up chatter out of notebooks (it would end up in the book).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

from . import exercises  # noqa: E402
from .config import PROFILES, Profile, data_dir, profile, seed_everything  # noqa: E402
from .data import (  # noqa: E402
    CLASS_NAMES, DataError, Splits, check_arrays, describe, download_cifar10, load_batches,
    load_cifar10, load_image_folder, load_image_tree, subset,
)
from .pipeline import (  # noqa: E402
    AUGMENTATIONS, channel_stats, make_alternating_flip_dataset, make_dataset, normalize, pad_crop_flip,
    random_affine,
)
from .results import (  # noqa: E402
    REFERENCE_DATA, chapter_summary, compare_with_reference, load_results, promote_results, record,
    reference, reference_figure, results_table, save_figure, show_reference_figure,
    show_reference_provenance,
)
from .synthetic import SHAPE_NAMES, draw_synthetic, make_synthetic  # noqa: E402
from .models import (  # noqa: E402
    MODELS, build_baseline_cnn, build_resnet, build_small_cnn, preact_residual_block, residual_block,
    se_block,
)
from .train import (  # noqa: E402
    OPTIMIZERS, SCHEDULES, Progress, Schedule, current_learning_rate, distribution_strategy, make_callbacks,
    make_loss, make_optimizer, make_schedule, plot_schedule, schedule_values, train, use_mixed_precision,
)
from .models import PartialIdentity, build_flagship, init_whitening  # noqa: E402
from .train import (  # noqa: E402
    FLAGSHIP_15_MINUTES, FLAGSHIP_SGD, EpochEval, Lookahead, Muon, SGDScaledBiases, flagship_recipe,
    orthogonalize, predict_tta, train_flagship,
)
from .models import layer_table  # noqa: E402
from .tables import markdown_table, show_table  # noqa: E402
from .train import plot_history  # noqa: E402
from .compress import (  # noqa: E402
    TFLiteModel, build_mobilenet_v2, build_pruned_model, build_qat_model, build_separable_cnn,
    compare_tflite, count_cost, evaluate_tflite, file_sizes, inverted_residual_block, keras_tflite_gap,
    pruning_callbacks, pruning_steps, representative_dataset, separable_bn_relu, sparsity, strip_pruning,
    time_tflite, to_tflite,
)
from .export import (  # noqa: E402
    export_gap, export_onnx, export_saved_model, export_tflite, read_preprocessing, write_preprocessing,
)
from .serve import (  # noqa: E402
    classify, load_predictor, make_server, running_server, start_server, stop_server,
)
from .gradcam import (  # noqa: E402
    class_scores, find_last_conv_layer, gradcam, localization_report, localization_scores, plot_gradcam,
)
from .robustness import (  # noqa: E402
    EPSILON, FastAdversarialModel, RobustnessMonitor, background_sensitivity, fgsm, pgd, robust_accuracy,
)
from .regularize import (  # noqa: E402
    StochasticDepth, build_regularized_resnet, cutmix, cutmix_boxes, cutout, l2, mixup,
)
from .evaluate import (  # noqa: E402
    calibration_bins, class_report, confusion, evaluate, expected_calibration_error, predict, top_k_accuracy,
    worst_mistakes,
)
from .plots import plot_confusion_matrix, plot_mistakes, plot_reliability  # noqa: E402
from .pipeline import make_image_data_generator, measure_throughput  # noqa: E402
from .plots import plot_augmentations, plot_class_balance, plot_image_grid  # noqa: E402
from .simclr import (  # noqa: E402
    SimCLR, build_classifier, build_projection_head, encoder_from, extract_features, knn_accuracy,
    KNNMonitor, label_fraction, linear_eval, make_views_dataset, npairs_loss, nt_xent_loss, simclr_augment,
)
from .distill import Distiller, distillation_loss, soft_targets  # noqa: E402
from . import federated  # noqa: E402  (TFF itself is imported only when a federated function needs it)
from .troubleshoot import BatchLosses, roughness, sort_by_label  # noqa: E402
from .train import FULL_PROFILE_TARGETS, resnet_recipe  # noqa: E402
