# Learning curve of scripts/char-strong.sh: gnuplot curve.gp (in this directory).
set datafile separator ','
set terminal pngcairo size 900,520 font 'sans,10'
set output 'curve.png'
set grid
set key top right
set xlabel 'wall time (minutes)'
set ylabel 'nats per character'
set title "tiny-shakespeare, 2 x 512 lstm, dropout 0.3, nanoGPT's split"
plot 1.4697 with lines dt 2 lc rgb 'black' title "nanoGPT char transformer (validation, GPU)", \
     'curve.csv' using ($5/60):2 with lines lw 2 lc rgb '#1f77b4' title 'train (mean since last validation)', \
     'curve.csv' using ($5/60):3 with linespoints lw 2 pt 7 lc rgb '#d62728' title 'validation'
