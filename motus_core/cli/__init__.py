"""ROS-free command-line tools: thin argparse mains that build their inputs and call library code.

One module per tool (entry points are registered in ``motus_ros/executables.py``, TOOLS):

* ``convert``                  ``motus-convert``: recorded episodes -> Motus / RoboTwin / LeRobot v3 datasets
* ``sim_dataset``              ``motus-sim-dataset``: scripted simulator demonstrations -> Motus layout
* ``convert_checkpoint``       ``motus-convert-checkpoint``: official Motus files -> a converted checkpoint
* ``motus_train``              ``motus-train``: Stage-3 fine-tuning of Motus (single process or torchrun)
* ``mola_train``               ``mola-train-stage{1,2,3}``: one MoLA training stage
* ``mola_convert_checkpoint``  ``mola-convert-checkpoint``: a released MoLA checkpoint -> a policy directory

Shared option groups: ``text_encoder`` (which umT5 builds the instruction embeddings). This is the
layer that may wire models into data: library packages receive what they need as arguments.
"""
