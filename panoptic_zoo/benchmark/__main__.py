import sys

from detectron2.utils.logger import setup_logger

from panoptic_zoo.acceleration import restart_with_heap_tunables
from panoptic_zoo.benchmark import main

restart_with_heap_tunables()  # glibc's thread cache off, for the heap setting run_benchmark makes
setup_logger(name="panoptic_zoo")
setup_logger(name="detectron2", abbrev_name="d2")
main(sys.argv[1:])
