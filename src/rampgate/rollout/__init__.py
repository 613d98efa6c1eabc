"""The rollout controller and what it reads and writes: plans, rollouts, gate metrics, leases and reports."""
