import sys

from detectron2.utils.logger import setup_logger

from panoptic_zoo.benchmark import main

setup_logger(name="panoptic_zoo")
setup_logger(name="detectron2", abbrev_name="d2")
main(sys.argv[1:])
