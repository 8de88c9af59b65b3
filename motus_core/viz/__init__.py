"""What the policy predicts, made visible (ROS-free).

* :mod:`.frames`      predicted frames -> camera views (undoes the model's mosaic via preprocessing)
* :mod:`.compare`     pairs predicted frames with the live frames of the same time
* :mod:`.kinematics`  batched forward kinematics of action chunks through the robot's URDF (yourdfpy)
* :mod:`.markers`     end-effector paths, gripper states and the ghost pose of a chunk, as marker geometry
* :mod:`.render`      comparison images, contact sheets and top-down path plots (Pillow)
* :mod:`.mcap_sheets` predicted-vs-actual contact sheets from a recorded MCAP file
* :mod:`.images`      raw/compressed image buffers -> RGB arrays (shared by the node and the MCAP tools)
* :mod:`.rviz_config` the rviz2 configuration adapted to a robot profile
* :mod:`.config`      the parameters of the visualizer node and of the MCAP recorder

Submodules are imported directly (``from motus_core.viz.markers import ...``) so that light users
(the graph description, launch files) do not pay for numpy/OpenCV/yourdfpy imports.
"""
