"""Real-time face tracker: 68 landmarks, head pose and ARKit blendshapes."""
