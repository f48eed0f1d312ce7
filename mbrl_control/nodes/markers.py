"""rviz markers for a plan: the predicted trajectory of each keypoint, and the goal."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

_COLOURS = [ColorRGBA(r=0.2, g=0.4, b=1.0, a=0.9), ColorRGBA(r=0.1, g=0.9, b=0.3, a=0.9)]


def plan_markers(
    keypoints: np.ndarray, stamp: Time, frame: str = "world", namespace: str = "plan"
) -> MarkerArray:
    """``keypoints[T, K, 3]``: one LINE_STRIP per keypoint (cart, pole tip, ...) along the plan."""
    out = MarkerArray()
    for k in range(keypoints.shape[1]):
        m = Marker()
        m.header.frame_id = frame
        m.header.stamp = stamp
        m.ns = namespace
        m.id = k
        m.type = Marker.LINE_STRIP
        m.action = Marker.ADD
        m.pose.orientation.w = 1.0
        m.scale.x = 0.02
        m.color = _COLOURS[k % len(_COLOURS)]
        m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in keypoints[:, k]]
        out.markers.append(m)
    return out


def goal_marker(position: np.ndarray, stamp: Time, frame: str = "world") -> Marker:
    m = Marker()
    m.header.frame_id = frame
    m.header.stamp = stamp
    m.ns = "goal"
    m.id = 0
    m.type = Marker.SPHERE
    m.action = Marker.ADD
    m.pose.position = Point(x=float(position[0]), y=float(position[1]), z=float(position[2]))
    m.pose.orientation.w = 1.0
    m.scale.x = m.scale.y = m.scale.z = 0.08
    m.color = ColorRGBA(r=1.0, g=0.8, b=0.0, a=0.8)
    return m


def uncertainty_markers(
    keypoints_of, mean: np.ndarray, cov: np.ndarray, stamp: Time, frame: str = "world", sigmas: float = 2.0
) -> MarkerArray:
    """``sigmas``-sigma ellipsoids of each keypoint (cart, pole tip, ...) of the state estimate.

    The keypoints' covariance is the state covariance pushed through the keypoint map's Jacobian
    (central differences: the map is cheap, smooth and not torch). Axis-aligned: rviz ellipsoids
    are, and the cart-pole's keypoints move in a plane."""
    # One call for the mean and both sides of every state entry (a 7-DoF arm's forward kinematics
    # per entry took 20 ms a marker update). The step suits keypoints computed in float32.
    eps = 1e-3
    steps = eps * np.eye(len(mean))
    points = keypoints_of(np.concatenate([mean[None], mean + steps, mean - steps]))  # [1 + 2 nx, K, 3]
    base = points[0]  # [K, 3]
    jac = np.moveaxis((points[1 : 1 + len(mean)] - points[1 + len(mean) :]) / (2 * eps), 0, -1)  # [K, 3, nx]
    out = MarkerArray()
    for k in range(base.shape[0]):
        var = np.einsum("ai,ij,aj->a", jac[k], cov, jac[k])
        m = Marker()
        m.header.frame_id = frame
        m.header.stamp = stamp
        m.ns = "estimate_uncertainty"
        m.id = k
        m.type = Marker.SPHERE
        m.action = Marker.ADD
        m.pose.position = Point(x=float(base[k, 0]), y=float(base[k, 1]), z=float(base[k, 2]))
        m.pose.orientation.w = 1.0
        scale = 2.0 * sigmas * np.sqrt(np.maximum(var, 0.0)) + 0.005  # visible even when tiny
        m.scale.x, m.scale.y, m.scale.z = (float(v) for v in scale)
        m.color = ColorRGBA(r=1.0, g=0.2, b=0.2, a=0.5)
        out.markers.append(m)
    return out
