"""The estimator's uncertainty markers: the state covariance pushed through the keypoints."""

from __future__ import annotations

import numpy as np

from mbrl_control.core.builders import load_robot
from mbrl_control.nodes.markers import uncertainty_markers


def test_uncertainty_ellipsoids_are_the_covariance_through_the_keypoints():
    """Each keypoint's sphere spans 2 sigma of its position, sigma from J P J^T with J the
    keypoints' Jacobian (here against a Jacobian by much finer central differences in float64
    arithmetic of the same map); for the cart-pole the cart moves only with x."""
    robot = load_robot("cartpole")
    task = robot.task
    mean = np.array([0.3, 2.5, 0.1, -0.4])
    cov = np.diag([1e-4, 4e-4, 1e-2, 1e-2])
    markers = uncertainty_markers(task.keypoints, mean, cov, stamp=_stamp())
    cart, tip = markers.markers[0], markers.markers[-1]
    assert abs(cart.scale.x - (2 * 2.0 * 1e-2 + 0.005)) < 1e-4  # sigma_x = 1 cm
    eps = 1e-4
    jac = np.stack([(task.keypoints((mean + d)[None])[0, -1] - task.keypoints((mean - d)[None])[0, -1]) / (2 * eps)
                    for d in eps * np.eye(4)], axis=-1)
    expected = 2 * 2.0 * np.sqrt(np.einsum("ai,ij,aj->a", jac, cov, jac)) + 0.005
    np.testing.assert_allclose([tip.scale.x, tip.scale.y, tip.scale.z], expected, rtol=2e-2, atol=1e-4)
    np.testing.assert_allclose([tip.pose.position.x, tip.pose.position.z], task.keypoints(mean[None])[0, -1][[0, 2]],
                               atol=1e-6)


def _stamp():
    from builtin_interfaces.msg import Time

    return Time(sec=1, nanosec=0)
